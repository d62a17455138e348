"""``dystream_tts``: an example TTS node (espeak-ng) that publishes its speech as a stamped burst.

Text in on ``text`` (``std_msgs/String``), audio out on ``audio`` (``dystream_ros/AudioChunk``, 16 kHz
pcm_s16le; remap it to the avatar's ``speaker_audio`` and the playback node's ``audio``, e.g.
``/speaker/audio``). A TTS engine knows its audio before it is heard, so it does not pace it at real
time: the first sample is stamped ``lead_s`` in the future and the chunks are published as fast as the
subscribers accept them, up to ``max_ahead_s`` ahead of their stamps (the avatar holds at most
``buffer_s`` and refuses stamps further than ``max_stamp_skew_s`` from its clock). The avatar then
produces each frame at its audio time and ``dystream_speaker`` plays each sample at the time of its
frame: the face and the sound are in sync with nothing added to the avatar's own latency.

A text that arrives while speaking is queued behind the current one (``gap_s`` between them).
``interrupt`` (``std_msgs/Empty``) and ``~/interrupt`` (``std_srvs/Trigger``) drop what is still unsent
(counted). ``~/said`` (``std_msgs/String``, JSON) reports each utterance's text, first stamp, duration
and chunk count when its first chunk is sent. Synthesis uses :func:`dystream_ros.data.speech.synthesize`
(libespeak-ng, Debian ``espeak-ng``) on a thread of its own.
"""

from __future__ import annotations

import collections
import json
import queue
import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Empty, String
from std_srvs.srv import Trigger

from dystream_ros.config import NS, SAMPLE_RATE
from dystream_ros.data.speech import VOICES, Voice, synthesize
from dystream_ros.msg import AudioChunk
from dystream_ros.runtime.settings import Param

from .mic import declare_params
from .outputs import ns_to_time, qos_profile
from .support import ThrottledLog, diagnostic_array, guarded, spin

__all__ = ["TtsNode", "main"]

NODE_NAME = "dystream_tts"

PARAMS: tuple[Param, ...] = (
    Param("voice", "us_m1", "a voice key of dystream_ros.data.speech.VOICES, or an espeak-ng voice name "
          "(e.g. en-us+f3)", read_only=True),
    Param("rate_wpm", 0, "words per minute; 0 = the voice's", read_only=True, lo=0, hi=450),
    Param("lead_s", 0.5, "stamp of an utterance's first sample: this far after the text arrived (covers "
          "synthesis, transport and the avatar settling on the speech)", read_only=True, lo=0.0, hi=5.0),
    Param("chunk_ms", 100, "audio per message", read_only=True, lo=10, hi=5000),
    Param("max_ahead_s", 2.0, "publish chunks at most this far ahead of their stamps (0 = the whole "
          "utterance at once)", read_only=True, lo=0.0, hi=60.0),
    Param("gap_s", 0.2, "silence between queued utterances", read_only=True, lo=0.0, hi=10.0),
    Param("frame_id", "tts", "header.frame_id of the audio", read_only=True),
    Param("qos_depth", 200, "publisher depth (reliable)", read_only=True, lo=1, hi=10000),
)


class TtsNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        v = VOICES.get(p["voice"]) or Voice(key=p["voice"], name=p["voice"])
        self.voice = Voice(v.key, v.name, int(p["rate_wpm"]) or v.rate, v.pitch, v.range)
        self._log = ThrottledLog(self.get_logger())
        self._pub = self.create_publisher(AudioChunk, "audio", qos_profile(True, int(p["qos_depth"])))
        self._said = self.create_publisher(String, "~/said", qos_profile(True, 50))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(String, "text", self._on_text, qos_profile(True, 50))
        self.create_subscription(Empty, "interrupt", lambda _m: self.interrupt("interrupt topic"),
                                 qos_profile(True, 10))
        self.create_service(Trigger, "~/interrupt",
                            guarded(self.get_logger(), "interrupt", self._interrupt_srv))
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._chunks: collections.deque = collections.deque()  # (stamp_ns, int16 samples, info or None)
        self._end_ns = 0  # stamp after the last queued sample
        self._generation = 0  # bumped by interrupts: synthesis results of older texts are dropped
        self.c = collections.Counter()
        self._texts: queue.Queue = queue.Queue()
        self._synth = threading.Thread(target=self._synth_loop, name="tts_synth", daemon=True)
        self._synth.start()
        self.create_timer(0.01, self._send_due)
        self.create_timer(1.0, self._publish_diagnostics)

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_text(self, msg) -> None:
        text = msg.data.strip()
        if not text:
            return
        self.c["texts"] += 1
        with self._lock:
            gen = self._generation
        self._texts.put((text, self.now_ns(), gen))

    def _synth_loop(self) -> None:
        while True:
            item = self._texts.get()
            if item is None:
                return
            text, arrived, gen = item
            try:
                utt = synthesize(text, self.voice)
            except Exception as e:  # noqa: BLE001 - a bad voice or text is reported, the node goes on
                self.c["synthesis_errors"] += 1
                self._log("synth", f"synthesis of {text[:40]!r} failed: {type(e).__name__}: {e}", "error")
                continue
            pcm = (np.clip(utt.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
            per = SAMPLE_RATE * int(self.p["chunk_ms"]) // 1000
            with self._lock:
                if gen != self._generation:
                    self.c["utterances_interrupted_before_start"] += 1
                    continue
                start = max(arrived + int(float(self.p["lead_s"]) * NS), self.now_ns() + NS // 50,
                            self._end_ns + int(float(self.p["gap_s"]) * NS) if self._chunks else 0)
                info = {"text": text, "start_ns": start, "duration_s": pcm.size / SAMPLE_RATE,
                        "chunks": -(-pcm.size // per), "rate": SAMPLE_RATE}
                for k, i in enumerate(range(0, pcm.size, per)):
                    self._chunks.append((start + i * NS // SAMPLE_RATE, pcm[i:i + per],
                                         info if k == 0 else None))
                self._end_ns = start + pcm.size * NS // SAMPLE_RATE
                self.c["utterances"] += 1
                self.c["samples_synthesized"] += pcm.size
            self._send_due()

    def _send_due(self) -> None:
        with self._send_lock:  # the timer and the synthesis thread: chunks leave in stamp order
            self._send_due_locked()

    def _send_due_locked(self) -> None:
        ahead = float(self.p["max_ahead_s"]) * NS
        now = self.now_ns()
        while True:
            with self._lock:
                if not self._chunks:
                    return
                stamp, pcm, info = self._chunks[0]
                if ahead > 0 and stamp - now > ahead:
                    return
                self._chunks.popleft()
            if info is not None:
                self._said.publish(String(data=json.dumps(info)))
            m = AudioChunk()
            m.header.stamp = ns_to_time(stamp)
            m.header.frame_id = self.p["frame_id"]
            m.sample_rate, m.channels, m.encoding = SAMPLE_RATE, 1, AudioChunk.ENCODING_PCM_S16LE
            m.data = pcm.astype("<i2").tobytes()
            self._pub.publish(m)
            self.c["chunks_published"] += 1
            self.c["samples_published"] += pcm.size

    def interrupt(self, source: str) -> tuple[bool, str]:
        with self._lock:
            n = sum(c[1].size for c in self._chunks)
            self._chunks.clear()
            self._end_ns = 0
            self._generation += 1
            self.c["interrupts"] += 1
            self.c["samples_interrupted"] += n
        while True:  # texts still waiting for synthesis
            try:
                self._texts.get_nowait()
                self.c["texts_interrupted"] += 1
            except queue.Empty:
                break
        self.get_logger().info(f"interrupt ({source}): {n} unsent samples dropped")
        return True, f"{n} unsent samples dropped"

    def _interrupt_srv(self, request, response):
        response.success, response.message = self.interrupt("~/interrupt")
        return response

    def stats(self) -> dict:
        with self._lock:
            d = dict(sorted(self.c.items()))
            d["samples_queued"] = int(sum(c[1].size for c in self._chunks))
        return d

    def _publish_diagnostics(self) -> None:
        d = self.stats()
        level = "warn" if d.get("synthesis_errors") else "ok"
        try:
            name = f"{self.get_fully_qualified_name()}: tts"
            self._diag_pub.publish(diagnostic_array(name, d, level, f"voice {self.voice.name}",
                                                    self.get_clock().now().to_msg()))
        except Exception:  # noqa: BLE001 - context shutting down
            pass

    def release(self) -> None:
        self._texts.put(None)


def main(args=None) -> int:
    return spin(TtsNode, NODE_NAME, release=lambda n: n.release(), args=args)


if __name__ == "__main__":
    raise SystemExit(main())
