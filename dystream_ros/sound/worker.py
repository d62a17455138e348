"""Sound streams in a worker process of their own, supervised: what the nodes use.

PortAudio's JACK host API ends the process with a failed assertion when the JACK server goes away
under an open stream (and again in ``Pa_Terminate``), and any host API lists its devices only when
PortAudio is initialised. So each stream runs in a child process (``python -m
dystream_ros.sound.worker``) that opens the device, serves the callback and exits when the stream
fails; :class:`Worker` (in the node's process) restarts it every ``retry_s`` until the device is back,
and counts every opening, failure and loss.

Wire format on the child's stdin/stdout: frames of ``>II`` (JSON header length, payload length), the
UTF-8 JSON header, then the raw payload (audio samples). No pickle.

* :class:`Capture`: the child stamps every block (:class:`~.streams.DirectCapture`); ``read()`` returns
  :class:`~.streams.Block` s in the parent.
* :class:`Player`: the child owns the :class:`~.queue.PlaybackQueue` (its callback fills from it);
  ``schedule()`` / ``flush()`` send to it, ``take_played()`` / ``flushes()`` / ``snapshot()`` read what it
  reports (every 10 ms).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .queue import Played
from .streams import Block, BlockQueue

__all__ = ["Capture", "Player", "Worker"]

_HEAD = struct.Struct(">II")


def _send(stream, header: dict, payload: bytes = b"") -> None:
    h = json.dumps(header, separators=(",", ":")).encode()
    stream.write(_HEAD.pack(len(h), len(payload)) + h + payload)
    stream.flush()


def _recv(stream) -> tuple[dict, bytes]:
    head = stream.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise EOFError
    hn, pn = _HEAD.unpack(head)
    h = stream.read(hn)
    p = stream.read(pn) if pn else b""
    if len(h) < hn or len(p) < pn:
        raise EOFError
    return json.loads(h.decode()), p


# ==============================================================================================
# the child process
def _child(cfg: dict) -> int:
    from .streams import DirectCapture, DirectPlayer

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # protocol frames only on the real stdout
    lock = threading.Lock()

    def send(h, p=b""):
        with lock:
            _send(out, h, p)

    def log(level, msg):
        send({"t": "log", "level": level, "msg": msg})

    kind = cfg.pop("kind")
    cls = DirectCapture if kind == "input" else DirectPlayer
    s = cls(log=log, **cfg)
    try:
        s.open_once()
    except Exception as e:  # noqa: BLE001 - reported to the parent, which retries
        msg = str(e) if type(e).__name__ == "DeviceError" else f"{type(e).__name__}: {e}"
        send({"t": "error", "msg": msg})
        return 2
    send({"t": "open", "rate": s.rate, "device": s.device_name, "channels": s.channels_open,
          "latency_ms": s.counters.latency_ms})
    stop = threading.Event()
    if kind == "output":
        def reader():
            inp = sys.stdin.buffer
            try:
                while True:
                    h, p = _recv(inp)
                    if h["t"] == "sched":
                        s.queue.schedule(np.frombuffer(p, dtype="<f4"), int(h["play"]), int(h["src"]))
                    elif h["t"] == "flush":
                        s.queue.flush(int(h["at"]))
            except (EOFError, OSError, ValueError):
                stop.set()
        threading.Thread(target=reader, daemon=True).start()
    else:
        def eof_watch():
            try:
                while sys.stdin.buffer.read(1):
                    pass
            except OSError:
                pass
            stop.set()
        threading.Thread(target=eof_watch, daemon=True).start()
    next_status = 0.0
    sent_flushes = 0
    try:
        while not stop.is_set():
            if kind == "input":
                blk = s.read(0.02)
                while blk is not None:
                    d = np.ascontiguousarray(blk.data)
                    send({"t": "block", "stamp": blk.stamp_ns, "lost": blk.lost_before, "adc": blk.adc_ns,
                          "index": blk.index, "rate": blk.rate, "ch": int(d.shape[1]), "dtype": str(d.dtype),
                          "dropped": blk.dropped_before},
                         d.tobytes())
                    blk = s.read(0)
            else:
                time.sleep(0.005)
                recs = s.queue.take_played()
                if recs:
                    send({"t": "played", "recs": [[r.source_stamp_ns, r.scheduled_ns, r.played_ns, r.samples]
                                                  for r in recs]})
                marks = s.queue.flushes()
                while sent_flushes < len(marks) and marks[sent_flushes].silent_from_ns is not None:
                    m = marks[sent_flushes]
                    send({"t": "flushed", "at": m.at_ns, "samples": m.samples,
                          "silent_from": m.silent_from_ns})
                    sent_flushes += 1
            now = time.monotonic()
            if now >= next_status:
                st = s.status()
                if kind == "output":
                    st.update(s.queue.snapshot())
                send({"t": "status", **st})
                next_status = now + 0.25
            why = s.stalled()
            if why:
                send({"t": "error", "msg": f"{kind} stream on {s.device_name!r} {why} (device lost?)",
                      "lost": True})
                return 3
    except (BrokenPipeError, OSError):
        return 0
    return 0


def main() -> None:
    # The parent decides when this process ends (it closes stdin; EOF ends the loop). A Ctrl-C or a
    # SIGTERM sent to the whole process group must not end it first: the parent would count a lost
    # device and start another while it shuts down.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    cfg = json.loads(sys.argv[1])
    rc = _child(cfg)
    sys.stderr.flush()
    os._exit(rc)  # never run PortAudio's atexit Pa_Terminate (it asserts once the server is gone)


# ==============================================================================================
# the parent side
class Worker:
    """Keeps one sound worker process running (see the module docstring).

    ``config``: the :class:`~.streams.DirectStream` keyword arguments plus ``kind`` ('input'/'output');
    ``log(level, message)``; ``env``: extra environment for the child (e.g. ``JACK_DEFAULT_SERVER``)."""

    def __init__(self, config: dict, *, retry_s: float = 1.0, log=None, env: dict | None = None):
        self.config = dict(config)
        self.kind = self.config["kind"]
        self.retry_s = float(retry_s)
        self._log = log or (lambda level, msg: None)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wlock = threading.Lock()
        self.opened = threading.Event()
        self.rate = 0
        self.device = ""
        self.opens = self.open_failures = self.device_losses = 0
        self.last_error = ""
        self.status: dict = {}
        self._totals: dict = {}  # counters of finished children, summed
        self._failing = False

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sound_{self.kind}_worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def is_open(self) -> bool:
        return self.opened.is_set()

    def wait_open(self, timeout: float) -> bool:
        return self.opened.wait(timeout)

    def totals(self, key: str) -> float:
        """A counter summed over every child so far (the running one included)."""
        return self._totals.get(key, 0) + self.status.get(key, 0)

    def send(self, header: dict, payload: bytes = b"") -> bool:
        p = self.proc
        if p is None or not self.opened.is_set():
            return False
        try:
            with self._wlock:
                _send(p.stdin, header, payload)
            return True
        except (OSError, ValueError):
            return False

    def _spawn(self) -> subprocess.Popen:
        pkg_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, **(self.env or {})}
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return subprocess.Popen([sys.executable, "-m", "dystream_ros.sound.worker", json.dumps(self.config)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.proc = p = self._spawn()
            was_open = False
            error = ""
            lost = False
            try:
                while True:
                    h, payload = _recv(p.stdout)
                    t = h["t"]
                    if t == "open":
                        self.rate, self.device = int(h["rate"]), h["device"]
                        self.opens += 1
                        was_open = True
                        self.opened.set()
                        if self._failing:
                            self._log("info", f"{self.kind} device is back: {self.device} at {self.rate} Hz")
                        self._failing = False
                        self._on_open(h)
                    elif t == "error":
                        error, lost = h["msg"], bool(h.get("lost"))
                    elif t == "log":
                        self._log(h["level"], h["msg"])
                    elif t == "status":
                        self.status = h
                    else:
                        self._on_message(h, payload)
            except (EOFError, OSError, ValueError):
                pass
            self.opened.clear()
            try:
                rc = p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            for k, v in self.status.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._totals[k] = self._totals.get(k, 0) + v
            self.status = {}
            if self._stop.is_set():
                break
            if was_open:
                self.device_losses += 1
                error = error or f"sound worker exited with {rc} (device lost?)"
            else:
                self.open_failures += 1
                error = error or f"sound worker exited with {rc} before opening the device"
            if lost or was_open or not self._failing or error != self.last_error:
                self._log("error", f"{self.kind} device: {error}; retrying every {self.retry_s:g} s")
            self.last_error = error
            self._failing = True
            self._stop.wait(self.retry_s)

    def _on_open(self, h: dict) -> None:
        """Subclasses: a child opened the device."""

    def _on_message(self, h: dict, payload: bytes) -> None:
        """Subclasses: a message of the child."""

    def counters(self) -> dict:
        return {"device_open": self.is_open, "device": self.device, "rate": self.rate, "opens": self.opens,
                "open_failures": self.open_failures, "device_losses": self.device_losses,
                "last_error": self.last_error}


class Capture(Worker):
    """Microphone capture in a worker: ``read()`` returns stamped :class:`~.streams.Block` s."""

    def __init__(self, config: dict, *, queue_blocks: int = 1000, **kw):
        super().__init__({**config, "kind": "input"}, **kw)
        self.blocks = BlockQueue(queue_blocks)  # this side's drops (the worker's own are in ``status``)

    @property
    def dropped_blocks(self) -> int:
        return self.blocks.dropped_blocks

    @property
    def dropped_samples(self) -> int:
        return self.blocks.dropped_samples

    def _on_message(self, h: dict, payload: bytes) -> None:
        if h["t"] != "block":
            return
        data = np.frombuffer(payload, dtype=h["dtype"]).reshape(-1, int(h["ch"]))
        blk = Block(data=data, stamp_ns=int(h["stamp"]), rate=int(h["rate"]), lost_before=int(h["lost"]),
                    adc_ns=int(h["adc"]), index=int(h["index"]), dropped_before=int(h["dropped"]))
        self.blocks.put(blk)

    def read(self, timeout: float = 0.1) -> Block | None:
        return self.blocks.get(timeout)


class Player(Worker):
    """Playback in a worker: ``schedule()`` samples at the device rate (``rate``) for a clock time."""

    def __init__(self, config: dict, **kw):
        super().__init__({**config, "kind": "output"}, **kw)
        self._played: list[Played] = []
        self._flushes: list[dict] = []
        self._mlock = threading.Lock()
        self.not_sent_samples = 0  # scheduled while no device was open (dropped, counted)

    def schedule(self, samples: np.ndarray, play_ns: int, source_stamp_ns: int) -> bool:
        x = np.ascontiguousarray(samples, dtype="<f4")
        ok = self.send({"t": "sched", "play": int(play_ns), "src": int(source_stamp_ns)}, x.tobytes())
        if not ok:
            self.not_sent_samples += x.size
        return ok

    def flush(self, at_ns: int) -> bool:
        return self.send({"t": "flush", "at": int(at_ns)})

    def _on_message(self, h: dict, payload: bytes) -> None:
        with self._mlock:
            if h["t"] == "played":
                self._played.extend(Played(*r) for r in h["recs"])
            elif h["t"] == "flushed":
                self._flushes.append(h)

    def take_played(self) -> list[Played]:
        with self._mlock:
            out, self._played = self._played, []
            return out

    def take_flushes(self) -> list[dict]:
        with self._mlock:
            out, self._flushes = self._flushes, []
            return out


if __name__ == "__main__":
    main()
