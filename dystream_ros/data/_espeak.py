"""libespeak-ng through ctypes, run in a helper process for deterministic output.

Why a helper process: espeak-ng keeps synthesis state that is never reset between calls (e.g. the
pitch-flutter index ``static int Flutter_ix`` in ``wavegen.c``, and libc ``rand()`` for noise), so
the same text gives slightly different audio and phoneme times depending on what was spoken
before. The helper (``python -c ...serve()``, started with :class:`EspeakClient`) initialises the
engine once and never synthesises itself; every request is served by a ``fork()`` of it, which
starts from that same pristine state (and ``srand(1)``). The helper is single-threaded and imports
nothing but ctypes, so forking it is safe. Cost: ~1-3 ms per request on top of synthesis.

Wire format (helper stdin/stdout): 4-byte big-endian length + pickle, both ways.

The constants are copied from espeak-ng's public header ``speak_lib.h`` (API revision 12) so the
-dev package is not needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

# --- speak_lib.h ----------------------------------------------------------------------------
AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT
INITIALIZE_PHONEME_EVENTS = 0x0001  # espeak_Initialize option: emit espeakEVENT_PHONEME
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1  # espeak_POSITION_TYPE
CHARS_UTF8 = 1  # espeak_Synth flags
SYNTH_PHONEMES = 0x100  # text inside [[ ]] is espeak phoneme code
EVENT_LIST_TERMINATED = 0  # espeak_EVENT_TYPE
EVENT_WORD = 1
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
PARAM_RATE = 1  # espeak_PARAMETER
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position in the text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this synthesis call
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakLib:
    """The initialised library (one per process: libespeak-ng has global state)."""

    def __init__(self):
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise RuntimeError(
                "libespeak-ng not found; install the Debian/Ubuntu packages espeak-ng and libespeak-ng1"
            ) from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed (is espeak-ng-data installed?)")
        self.lib = lib
        self.rate = int(rate)
        self._chunks: list[bytes] = []
        self._events: list[tuple] = []
        self._callback = _Callback(self._on_synth)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * numsamples))
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            name = (
                bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                if ev.type == EVENT_PHONEME
                else ""
            )
            self._events.append((ev.type, ev.audio_position, ev.text_position, ev.length, name))
            if ev.type == EVENT_MSG_TERMINATED:
                break
            i += 1
        return 0

    def synth(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int
    ) -> tuple[bytes, list, int]:
        """(native-endian int16 audio bytes, events, sample rate) for ``text``."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        for param, value in (
            (PARAM_RATE, rate),
            (PARAM_PITCH, pitch),
            (PARAM_RANGE, pitch_range),
            (PARAM_VOLUME, 100),
        ):
            lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8 | SYNTH_PHONEMES, None, None)
        if err != EE_OK:
            raise RuntimeError(f"espeak_Synth failed with {err}")
        lib.espeak_Synchronize()
        return b"".join(self._chunks), list(self._events), self.rate


# --- helper process ---------------------------------------------------------------------------


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _recv(stream):
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    (n,) = struct.unpack(">I", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def serve() -> None:
    """Helper main loop: initialise once, then fork a fresh copy for every request."""
    # The parent ends this process (EOF on stdin). A Ctrl-C reaches the whole process group, e.g. under
    # ``ros2 launch``: it is the parent's to act on, not a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but protocol frames on the real stdout
    try:
        engine = EspeakLib()
        # load the English dictionary and phoneme tables once, so forks need not (the warm-up is the
        # same every time, so the state each fork starts from is still fixed)
        engine.synth("a", "en-us", 175, 50, 50)
        _send(stdout, ("ready", engine.rate))
    except Exception as e:  # report and quit
        _send(stdout, ("error", f"{type(e).__name__}: {e}"))
        return
    libc = ctypes.CDLL(None)
    while True:
        try:
            req = _recv(stdin)
        except EOFError:
            return
        if req is None:
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: pristine engine state
            os.close(r)
            try:
                libc.srand(1)
                result = ("ok", engine.synth(*req))
            except Exception as e:
                result = ("error", f"{type(e).__name__}: {e}")
            with os.fdopen(w, "wb") as f:
                _send(f, result)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            try:
                result = _recv(f)
            except EOFError:
                result = ("error", "espeak helper child died")
        os.waitpid(pid, 0)
        _send(stdout, result)


class EspeakClient:
    """Talks to the helper process (started on first use; one per client process)."""

    _instance: EspeakClient | None = None
    _pid = -1
    _lock = threading.Lock()

    def __init__(self):
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from dystream_ros.data._espeak import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        status, payload = _recv(self.proc.stdout)
        if status != "ready":
            self.close()
            raise RuntimeError(f"espeak-ng helper failed to start: {payload}")
        self.rate = int(payload)
        self.owner = os.getpid()

    @classmethod
    def get(cls) -> EspeakClient:
        with cls._lock:
            if cls._instance is None or cls._pid != os.getpid() or cls._instance.proc.poll() is not None:
                cls._instance = cls()
                cls._pid = os.getpid()
            return cls._instance

    def synth(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int
    ) -> tuple[bytes, list, int]:
        with self._lock:
            _send(self.proc.stdin, (text, voice, int(rate), int(pitch), int(pitch_range)))
            status, payload = _recv(self.proc.stdout)
        if status != "ok":
            if payload.startswith("ValueError"):
                raise ValueError(payload.split(": ", 1)[-1])
            raise RuntimeError(payload)
        return payload

    def close(self) -> None:
        if getattr(self, "owner", os.getpid()) != os.getpid():
            return  # inherited through fork: the helper belongs to the parent process
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()

    def __del__(self):
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.close()
