"""dystream_mic, dystream_speaker, dystream_tts and dystream_node as installed processes over real DDS,
on a real JACK server with the dummy driver (no sound card, no mock).

The robot set-up of ``launch/dystream_robot.launch.py``: the microphone feeds the avatar's listener
channel, the TTS node publishes its speech as a burst stamped in the near future on the speaker topic,
the avatar publishes a frame per 40 ms and the playback node plays each sample at the moment the frame
of that audio is published. Measured here (printed; the report in docs/AUDIO_IO.md):

* A/V offset: each frame's publish time (its arrival at the probe) minus the playback time of its
  first sample (from the playback node's ``~/timing``: the DAC time of each chunk), over a TTS
  utterance; and the same against the stamp itself, i.e. without the playback node delaying the sound.
* barge-in: from the interrupt to the start of silence at the DAC, and to the last frame that still
  showed the interrupted speech.
* mic: every captured sample reaches the avatar or is counted; stamps contiguous and monotonic.

Asserted are properties that hold on any machine: every sample accounted for, the offset with the
playback node under one frame (40 ms) while without it the frame latency is several frames, silence
after an interrupt within a few output buffers, the face back to not speaking.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from node_helpers import REPO, Spinner, stamp_ns, wait_for  # noqa: E402

from dystream_ros.config import NS  # noqa: E402
from dystream_ros.sound.jack import JackServer, jack_available  # noqa: E402

LIB = REPO / "install" / "dystream_ros" / "lib" / "dystream_ros"
FRAME_NS = NS // 25
SPEAKING = (1, 3)  # AvatarState.STATE_SPEAKING, STATE_BOTH
TEXT = ("Hello there. I am the robot, and my face moves with my voice while I speak to you. "
        "The quick brown fox jumps over the lazy dog, and then it runs away into the forest.")


def _skip_reason() -> str | None:
    if jack_available():
        return jack_available()
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as e:
        return f"sounddevice/PortAudio not importable: {e}"
    if not (LIB / "dystream_speaker").exists():
        return f"{LIB}/dystream_speaker missing: run `make setup`"
    return None


if _skip_reason():
    pytest.skip(_skip_reason(), allow_module_level=True)


class Robot:
    """The processes of the robot launch and a probe node in this process."""

    def __init__(self, tmp: Path, jack: JackServer):
        self.tmp, self.jack, self.procs = tmp, jack, {}

    def start(self, name: str, *args: str) -> None:
        log = open(self.tmp / f"{name}.log", "wb")
        # the source tree first (as in this process), the install tree for the generated messages
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        self.procs[name] = subprocess.Popen([str(LIB / name), "--ros-args", *args], stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.jack.env(), "PYTHONPATH": path})

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def robot(tmp_path_factory):
    from dystream_ros.msg import AudioChunk, AvatarState
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Empty, String

    tmp = tmp_path_factory.mktemp("robot")
    jack = JackServer(rate=48000, period=256, log=tmp / "jackd.log").start()
    r = Robot(tmp, jack)
    r.start("dystream_node", "--params-file", str(REPO / "config" / "default.yaml"), "-r", "__ns:=/dystream",
            "-p", "checkpoint:=random", "-p", "render:=false", "-p", "catch_up_limit:=50",
            *os.environ.get("DYSTREAM_SOUND_AVATAR_ARGS", "").split(),
            "-r", "speaker_audio:=/speaker/audio", "-r", "listener_audio:=/listener/audio")
    r.start("dystream_mic", "-r", "audio:=/listener/audio")
    r.start("dystream_speaker", "-r", "audio:=/speaker/audio", "-r", "state:=/dystream/state",
            "-r", "interrupt:=/dystream/interrupt")
    r.start("dystream_tts", "-r", "audio:=/speaker/audio", "-r", "text:=/dystream/say",
            "-r", "interrupt:=/dystream/interrupt")
    rclpy.init()
    probe = Node("sound_probe")
    rel = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
    r.frames, r.timing, r.said, r.mic, r.diag = [], [], [], [], {}

    r.diag_at = {}

    def on_diag(arr):
        for st in arr.status:
            name = st.name.split(":")[0]
            r.diag[name] = {kv.key: kv.value for kv in st.values}
            r.diag_at[name] = time.time_ns()

    from diagnostic_msgs.msg import DiagnosticArray

    probe.create_subscription(
        AvatarState, "/dystream/state",
        lambda m: r.frames.append((stamp_ns(m.header), time.time_ns(), int(m.state))), rel)
    probe.create_subscription(String, "/dystream_speaker/timing",
                              lambda m: r.timing.append(json.loads(m.data)), rel)
    probe.create_subscription(String, "/dystream_tts/said", lambda m: r.said.append(json.loads(m.data)), rel)
    probe.create_subscription(AudioChunk, "/listener/audio",
                              lambda m: r.mic.append((stamp_ns(m.header), len(m.data) // 2 // m.channels,
                                                      m.sample_rate, time.time_ns())), rel)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    r.say = probe.create_publisher(String, "/dystream/say", 10)
    r.interrupt = probe.create_publisher(Empty, "/dystream/interrupt", 10)
    r.String, r.Empty = String, Empty
    spinner = Spinner(probe)
    try:
        # the TTS node's text subscription matched too: a `say` published before it would be lost (the
        # first test's utterance was, on a clean run: nothing waited for the TTS process to come up)
        ok = wait_for(lambda: len(r.frames) > 25 and "/dystream_speaker" in r.diag
                      and r.diag["/dystream_speaker"].get("device_open") == "True"
                      and r.say.get_subscription_count() > 0, 120)
        assert ok, "robot did not come up:\n" + "\n".join(r.log(n)[-1500:] for n in r.procs)
        yield r
    finally:
        spinner.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
        r.stop()
        jack.stop()


def _speak(r: Robot, text: str) -> dict:
    n0 = len(r.said)
    r.say.publish(r.String(data=text))
    assert wait_for(lambda: len(r.said) > n0, 60), "the TTS node said nothing"
    return r.said[n0]


def _offsets(r: Robot, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of [start, end): publish - playback of its first sample, and publish - stamp (ms)."""
    played = sorted((t["source_stamp_ns"], t["played_ns"]) for t in r.timing if t["kind"] == "played")
    src = np.array([p[0] for p in played], dtype=np.int64)
    at = np.array([p[1] for p in played], dtype=np.int64)
    with_pb, without = [], []
    for f, recv, _state in list(r.frames):
        if not start <= f < end:
            continue
        k = int(np.searchsorted(src, f, side="right")) - 1
        if k < 0:
            continue
        with_pb.append((recv - (at[k] + (f - src[k]))) / 1e6)
        without.append((recv - f) / 1e6)
    return np.array(with_pb), np.array(without)


def test_tts_burst_face_and_sound_in_sync(robot):
    r = robot
    u = _speak(r, TEXT)
    start, end = u["start_ns"], u["start_ns"] + int(u["duration_s"] * NS)
    assert wait_for(lambda: r.frames and r.frames[-1][0] > end + 5 * FRAME_NS, u["duration_s"] + 30)
    utterance = u["duration_s"] * 48000

    def device(k: str) -> int:
        return int(r.diag["/dystream_speaker"].get(f"device_samples_{k}", 0))

    # the utterance was sent to the device and its queue ran dry: every sample there has its outcome
    assert wait_for(lambda: device("scheduled") > 0 and device("queued") == 0
                    and device("scheduled") == device("played") + device("late") + device("overflow")
                    + device("flushed"), 30), r.diag["/dystream_speaker"]
    time.sleep(0.5)  # the last timing records
    off, raw = _offsets(r, start, end)
    n_frames = int((end - start) // FRAME_NS)
    print(f"\nTTS burst {u['duration_s']:.1f} s, {len(off)} frames: with the playback node median "
          f"{np.median(off):+.1f} ms, p95 |.| {np.percentile(np.abs(off), 95):.1f} ms, max |.| "
          f"{np.abs(off).max():.1f} ms; without (publish - stamp) median {np.median(raw):.1f} ms, p95 "
          f"{np.percentile(raw, 95):.1f} ms")
    sec = ((np.array([f for f, _, _ in r.frames if start <= f < end]) - start) // NS)[:len(off)]
    print("  per second, median offset with the playback node (ms): "
          + " ".join(f"{np.median(off[sec == k]):+.0f}" for k in np.unique(sec)))
    print("  per second, median frame latency publish - stamp (ms): "
          + " ".join(f"{np.median(raw[sec == k]):.0f}" for k in np.unique(sec)))
    assert len(off) >= 0.8 * n_frames
    d = r.diag["/dystream_speaker"]
    assert d["samples_unaccounted"] == "0" and d["device_samples_unaccounted"] == "0"
    played = int(d["device_samples_played"])
    # what a starved machine costs is counted: samples the callback reached too late, audio that came
    # while the device was being reopened or did not fit, silence the sync left out
    counted = sum(int(d.get(k, 0)) for k in ("device_samples_late", "output_samples_no_device",
                                             "output_samples_overflow", "sync_skipped_samples"))
    assert played + counted > 0.9 * utterance, d
    if played <= 0.9 * utterance:
        assert counted + int(d["device_underflow_flags"]) > 0, d
    assert int(d["frames_matched"]) > 0
    p95, med = np.percentile(raw, 95), np.median(raw)
    if p95 > 2.0 * med:
        pytest.skip(f"the avatar stalled during the utterance (frame latency p95 {p95:.0f} ms against a "
                    f"median of {med:.0f} ms): this machine is too loaded to judge the sync; figures above")
    assert abs(np.median(off)) < 40.0, d  # under one frame
    assert np.median(raw) > abs(np.median(off)) + 40.0  # the avatar's latency the playback node absorbs


def test_barge_in_flushes_sound_and_face(robot):
    r = robot
    u = _speak(r, TEXT + " " + TEXT)
    start = u["start_ns"]
    assert wait_for(lambda: any(f >= start + 2 * NS and s in SPEAKING for f, _, s in list(r.frames)), 30)
    assert wait_for(lambda: any(t["kind"] == "played" and t["source_stamp_ns"] >= start + 2 * NS
                                for t in list(r.timing)), 10)
    n_flush = sum(1 for t in r.timing if t["kind"] == "flushed")
    t_int = time.time_ns()
    r.interrupt.publish(r.Empty())
    assert wait_for(lambda: sum(1 for t in list(r.timing) if t["kind"] == "flushed") > n_flush, 5)
    fl = [t for t in r.timing if t["kind"] == "flushed"][-1]
    time.sleep(2.0)
    after = [(f, recv, s) for f, recv, s in list(r.frames) if recv > t_int]
    speaking_after = [recv for f, recv, s in after if s in SPEAKING]
    last_speaking_ms = (max(speaking_after) - t_int) / 1e6 if speaking_after else 0.0
    to_silence_ms = (fl["silent_from_ns"] - t_int) / 1e6
    print(f"\nbarge-in: {fl['samples']} queued samples flushed; interrupt -> silence at the DAC "
          f"{to_silence_ms:.1f} ms (speaker's own figure {fl['to_silence_ms']:.1f} ms); interrupt -> last "
          f"speaking frame published {last_speaking_ms:.1f} ms ({len(speaking_after)} frames)")
    # what the device had queued (send_ahead_s) is flushed there, the rest of the utterance in the node
    assert fl["samples"] > 0
    assert wait_for(lambda: int(r.diag["/dystream_speaker"].get("output_samples_interrupted_held", 0))
                    > 48000, 5)  # seconds of speech were still to come
    assert to_silence_ms < 100.0  # a few output buffers, not the rest of the utterance
    assert after and after[-1][2] not in SPEAKING  # the face went back to listening / idle
    assert last_speaking_ms < 1000.0
    d = r.diag["/dystream_speaker"]
    assert int(d["interrupts"]) >= 1 and d["samples_unaccounted"] == "0"
    av = r.diag["/dystream/dystream_node"]
    assert int(av.get("speaker_interrupts", 0)) >= 1 and int(av.get("speaker_interrupted_samples", 0)) > 0


def test_mic_into_the_avatar_every_sample_accounted(robot):
    r = robot
    seconds = float(os.environ.get("DYSTREAM_SOUND_MIC_S", "15"))
    node = "/dystream/dystream_node"

    def accepted() -> int:
        return int(r.diag[node]["listener_messages_accepted"])

    n0, a0 = len(r.mic), accepted()
    time.sleep(seconds)
    got = r.mic[n0:]
    n1, a1 = len(r.mic), accepted()
    stamps = np.array([g[0] for g in got], dtype=np.int64)
    frames = np.array([g[1] for g in got])
    rate = got[0][2]
    assert (np.diff(stamps) > 0).all()
    gap = np.diff(stamps) - frames[:-1] * NS / rate  # stamp step minus the block's duration
    md = r.diag["/dystream_mic"]
    lost = int(md["lost_samples_total"])
    span = (stamps[-1] - stamps[0]) / NS
    # contiguous but for counted losses: a step beyond the bounded slew is a counted gap
    big = np.abs(gap) > 0.6e6
    # stamps against the sample count, published samples plus the counted gaps
    drift_ms = (stamps[-1] - stamps[0] - frames[:-1].sum() * NS / rate - gap[big].sum()) / 1e6
    print(f"\nmic {span:.0f} s at {rate} Hz: {len(got)} blocks, {int(big.sum())} gaps "
          f"({gap[big].sum() / 1e6:.1f} ms; the mic counted {lost} lost samples, xruns {md.get('xruns')}), "
          f"stamps minus sample count {drift_ms:+.3f} ms ({drift_ms / span * 60:+.3f} ms/min); "
          f"the avatar took {a1 - a0} of {n1 - n0} messages in the same time")
    assert not big.any() or lost > 0
    av = r.diag[node]
    assert av.get("messages_unaccounted") == "0"
    assert abs((a1 - a0) - (n1 - n0)) <= 0.05 * (n1 - n0) + 25  # the avatar keeps up with the mic


def test_missing_devices_are_reported_and_audio_counted(robot, tmp_path):
    """Nodes started with no sound server: a clear error in /diagnostics, retries counted, audio that
    arrives meanwhile counted as dropped for want of a device; nothing crashes."""
    from dystream_ros.msg import AudioChunk
    from rclpy.node import Node

    r = Robot(tmp_path, JackServer(name=f"absent-{os.getpid()}"))
    r.start("dystream_mic", "-r", "__node:=bad_mic", "-p", "retry_s:=0.3")
    r.start("dystream_speaker", "-r", "__node:=bad_speaker", "-r", "audio:=/bad/audio", "-p", "retry_s:=0.3")
    node = Node("bad_device_probe")
    pub = node.create_publisher(AudioChunk, "/bad/audio", 10)
    spinner = Spinner(node)
    try:
        ok = wait_for(lambda: int(robot.diag.get("/bad_mic", {}).get("open_failures", 0)) >= 2
                      and int(robot.diag.get("/bad_speaker", {}).get("open_failures", 0)) >= 2, 60)
        assert ok, r.log("dystream_mic")[-2000:] + r.log("dystream_speaker")[-2000:]
        assert "no input device" in robot.diag["/bad_mic"]["last_error"]
        assert "no output device" in robot.diag["/bad_speaker"]["last_error"]
        assert "cannot open" in r.log("dystream_mic") or "no input device" in r.log("dystream_mic")
        m = AudioChunk(sample_rate=16000, channels=1, encoding="pcm_s16le", data=bytes(3200))
        m.header.stamp.sec = int(time.time())
        for _ in range(5):
            pub.publish(m)
            time.sleep(0.1)
        assert wait_for(lambda: int(robot.diag.get("/bad_speaker", {}).get("samples_no_device", 0)) > 0, 10)
        assert robot.diag["/bad_speaker"]["samples_unaccounted"] == "0"
        assert all(p.poll() is None for p in r.procs.values())  # still running
    finally:
        spinner.shutdown()
        node.destroy_node()
        r.stop()


def test_burst_longer_than_the_queue_is_counted(robot, tmp_path):
    """A 3 s burst at once into a playback node that may hold 1 s: 1 s plays, the rest is counted as
    overflow, every sample is accounted for, the node keeps running."""
    from dystream_ros.msg import AudioChunk
    from rclpy.node import Node

    r = Robot(tmp_path, robot.jack)
    r.start("dystream_speaker", "-r", "__node:=small_speaker", "-r", "audio:=/burst/audio",
            "-p", "max_queue_s:=1.0", "-p", "playback_delay:=0.1")
    node = Node("burst_probe")
    pub = node.create_publisher(AudioChunk, "/burst/audio", 100)
    spinner = Spinner(node)
    try:
        assert wait_for(lambda: robot.diag.get("/small_speaker", {}).get("device_open") == "True", 60), \
            r.log("dystream_speaker")[-2000:]
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
        t0 = time.time_ns() + 300_000_000
        x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000 * 3) / 16000) * 32767).astype("<i2")
        for k in range(30):  # 100 ms chunks, all at once
            m = AudioChunk(sample_rate=16000, channels=1, encoding="pcm_s16le",
                           data=x[k * 1600:(k + 1) * 1600].tobytes())
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(t0 + k * 100_000_000, NS)
            pub.publish(m)
        assert wait_for(lambda: int(robot.diag.get("/small_speaker", {}).get("device_samples_played", 0))
                        >= 40000, 15)
        time.sleep(1.5)
        d = robot.diag["/small_speaker"]
        print(f"\nburst 3 s into a 1 s queue: played {d['device_samples_played']} samples at 48 kHz, "
              f"overflow {d.get('output_samples_overflow')} samples at 48 kHz")
        assert int(d.get("output_samples_overflow", 0)) >= 90000  # about 2 s at 48 kHz
        assert d["samples_unaccounted"] == "0" and d["device_samples_unaccounted"] == "0"
        assert r.procs["dystream_speaker"].poll() is None
    finally:
        spinner.shutdown()
        node.destroy_node()
        r.stop()
