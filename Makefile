# dystream_ros — the two set-up commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=

.PHONY: help setup test test-stress demo lint clean

help:
	@echo "make demo   - set up (if needed) and run the demo"
	@echo "make test   - set up (if needed) and run the test suite"
	@echo "make test-stress - the ROS tests while a CPU hog occupies one core"
	@echo "make setup  - create .venv (torch, ROS 2 Kilted wheels, deps) and colcon-build the package"
	@echo "make lint   - ruff"
	@echo "make clean  - remove build/ install/ log/ (keeps .venv)"

setup:
	@bash scripts/setup.sh

test: setup
	@source scripts/env.sh && DYSTREAM_REQUIRE_ROS=1 pytest $(PYTEST_ARGS)

test-stress: setup
	@source scripts/env.sh && bash scripts/stress.sh $(PYTEST_ARGS)

demo: setup
	@source scripts/env.sh && bash scripts/demo.sh

lint: setup
	@source scripts/env.sh && ruff check dystream_ros test scripts setup.py

clean:
	rm -rf build install log
