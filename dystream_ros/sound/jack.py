"""A JACK audio server with the dummy driver: real PortAudio streams on a machine without a sound card.

    with JackServer(rate=48000, period=256) as jack:      # jackd -n <name> -d dummy -r 48000 -p 256
        env = jack.env()                                   # JACK_DEFAULT_SERVER=<name> for clients
        ...                                                # PortAudio's JACK host API sees "system"

The dummy driver runs the JACK graph on the system clock at the given rate and period with silent
capture ports, so capture, playback, xruns and timing are those of a real JACK server. Each server has
its own name, so tests running side by side never share one. Debian/Ubuntu: ``apt-get install jackd2``
(and ``libportaudio2``, whose PortAudio is built with JACK support).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

__all__ = ["JackServer", "jack_available"]


def jack_available() -> str | None:
    """None when ``jackd`` and ``jack_lsp`` are installed, else what is missing (a skip reason)."""
    missing = [t for t in ("jackd", "jack_lsp", "jack_connect") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: apt-get install jackd2)"
    return None


class JackServer:
    """``jackd -d dummy`` started and stopped by its owner (see the module docstring)."""

    def __init__(self, name: str | None = None, *, rate: int = 48000, period: int = 256,
                 capture: int = 2, playback: int = 2, log: str | Path | None = None):
        self.name = name or f"dystream-{uuid.uuid4().hex[:8]}"
        self.rate, self.period = int(rate), int(period)
        self.capture, self.playback = int(capture), int(playback)
        self.log = Path(log) if log else None
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """Environment for client processes: talk to this server, never start another."""
        return {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}

    def start(self, timeout: float = 15.0) -> JackServer:
        reason = jack_available()
        if reason:
            raise RuntimeError(reason)
        cmd = ["jackd", "--no-mlock", "-n", self.name, "-d", "dummy", "-r", str(self.rate),
               "-p", str(self.period), "-C", str(self.capture), "-P", str(self.playback)]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jackd exited with {self.proc.returncode} ({' '.join(cmd)}; "
                                   f"log: {self.log})")
            if "system:playback_1" in self.ports() or (self.playback == 0 and self.ports()):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd did not come up within {timeout} s ({' '.join(cmd)})")

    def ports(self) -> list[str]:
        """The server's port names (empty when it is not running)."""
        try:
            r = subprocess.run(["jack_lsp", "-s", self.name], capture_output=True, text=True, timeout=5,
                               env={**os.environ, **self.env()})
        except (OSError, subprocess.TimeoutExpired):
            return []
        if r.returncode != 0:
            return []
        return [line.strip() for line in r.stdout.splitlines() if line.strip()]

    def connect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_connect", "-s", self.name, src, dst], check=True, capture_output=True,
                       timeout=5, env={**os.environ, **self.env()})

    def xruns(self) -> tuple[int, float]:
        """What jackd has logged so far (0, 0.0 without a ``log``): the number of xruns (``JackEngine::XRun``,
        a client that missed its cycle, and the driver's ``Process XRun``, a late cycle) and the total
        lateness of the driver's cycles in ms (``XRun = N usec``): how far the graph's clock slipped."""
        if self.log is None or not self.log.exists():
            return 0, 0.0
        count, late_us = 0, 0
        with open(self.log, "rb") as f:
            for line in f:
                if b"XRun" in line:
                    count += 1
                    m = re.search(rb"XRun = (\d+) usec", line)
                    late_us += int(m.group(1)) if m else 0
        return count, late_us / 1000.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
