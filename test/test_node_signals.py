"""dystream_node exits 0 however often it is told to stop.

``ros2 launch`` forwards Ctrl-C to a node that the terminal's process group already delivered it to,
and follows up with SIGTERM; so a second SIGINT, or a SIGTERM, lands while the first one's cleanup
runs. Each run starts the installed executable the way ``ros2 run`` does, waits for it to be active,
then sends SIGINT and a second signal after a delay from 0 to 1 s: 10 runs, every one must exit 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
EXE = REPO / "install" / "dystream_ros" / "lib" / "dystream_ros" / "dystream_node"
# (delay before the second signal in s, the second signal): both orders launch produces, spread over
# the whole cleanup (context shutdown, model release, DDS teardown, interpreter exit)
RUNS = [(0.0, signal.SIGINT), (0.0, signal.SIGTERM), (0.005, signal.SIGINT), (0.01, signal.SIGTERM),
        (0.03, signal.SIGINT), (0.05, signal.SIGTERM), (0.1, signal.SIGINT), (0.2, signal.SIGTERM),
        (0.5, signal.SIGINT), (1.0, signal.SIGTERM)]


def _start(log: Path) -> tuple[subprocess.Popen, object]:
    fh = open(log, "wb")
    cmd = [str(EXE), "--ros-args", "-p", "checkpoint:=random", "-p", "render:=false",
           "-p", "warmup_frames:=0", "-r", f"__node:=sigtest_{log.stem}"]
    # PYTHONFAULTHANDLER: a SIGABRT makes a hung process print every thread's Python stack (see _wait_exit)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), fh


def _wait_exit(p: subprocess.Popen, log: Path, what: str, timeout: float = 60.0) -> int:
    """The exit code; a process still running after ``timeout`` is aborted (its threads' stacks land
    in its log) and the test fails with them."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGABRT)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        pytest.fail(f"{what}: still running after {timeout:.0f} s; its stacks at SIGABRT:\n"
                    + log.read_text(errors="replace")[-6000:])


def _wait_active(p: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if b"active: listening" in log.read_bytes():
            return
        if p.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"node did not become active (rc={p.poll()}): {log.read_text(errors='replace')[-2000:]}")


@pytest.mark.parametrize("pair", [RUNS[i:i + 2] for i in range(0, len(RUNS), 2)],
                         ids=lambda pair: "+".join(f"{d}s-{s.name}" for d, s in pair))
def test_second_signal_during_shutdown_still_exits_0(tmp_path, pair):
    if not EXE.exists():
        pytest.fail(f"{EXE} missing: run `make setup`")
    procs = []
    try:
        for k, run in enumerate(pair):  # two at a time: the run is mostly waiting for start-up
            log = tmp_path / f"run{k}.log"
            p, fh = _start(log)
            procs.append((p, fh, log, run))
        for p, _, log, _ in procs:
            _wait_active(p, log)
        for p, _, _, (delay, second) in procs:
            p.send_signal(signal.SIGINT)
            time.sleep(delay)
            if p.poll() is None:
                p.send_signal(second)
        for p, _, log, (delay, second) in procs:
            rc = _wait_exit(p, log, f"SIGINT then {second.name} after {delay} s")
            assert rc == 0, (f"SIGINT then {second.name} after {delay} s: exit {rc}",
                             log.read_text(errors="replace")[-2000:])
    finally:
        for p, fh, _, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            fh.close()
