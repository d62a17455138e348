"""dystream_node in-process under use_sim_time, over real DDS: frames, stamps, latents, images.

The test owns /clock, so the count of frames is exact whatever the machine's load: audio (44.1 kHz
int16 stereo, 512-sample chunks on the speaker and 4096-sample chunks on the listener) is published a
little ahead of the clock, the clock advances in 10 ms steps, and frames are due exactly when their
audio + lookahead has arrived.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from node_helpers import NS, Probe, Spinner, chunk_msg, stamp_ns, tone_stereo_int16, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

T0 = 100 * NS  # sim time at start
AUDIO_T = T0 + 1 * NS  # stamp of the first audio sample
RATE = 44100
SECONDS = 2.0
IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def refdir(tmp_path_factory):
    return tmp_path_factory.mktemp("references")


@pytest.fixture(scope="module")
def sim(refdir):
    from dystream_ros.nodes.dystream_node import DystreamNode

    rclpy.init()
    overrides = {"use_sim_time": True, "checkpoint": "random", "autostart": False, "image_size": IMAGE_SIZE,
                 "catch_up_limit": 10000, "speaker_wait_ms": 5000.0, "listener_wait_ms": 5000.0,
                 "warmup_frames": 1, "output_qos_depth": 100,
                 # reliable audio: this test compares latents with an offline run, so a best-effort
                 # sample lost on a loaded machine (a gap of silence) would be a false failure
                 "input_qos": "reliable", "input_qos_depth": 1000, "reference_dirs": str(refdir)}
    node = DystreamNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    tester = Probe(reliable_audio=True)
    tester.watch_info("/dystream_node/info")
    spinner = Spinner(node, tester)
    tester.publish_clock(T0)
    assert wait_for(lambda: node.get_clock().now().nanoseconds >= T0, 30), "/clock not received"
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    yield node, tester
    spinner.shutdown()
    node.release_for_exit()
    node.destroy_node()
    tester.destroy_node()
    rclpy.try_shutdown()


def test_frames_stamps_latents_images(sim):
    import json

    node, tester = sim
    # Idle face before any audio, stamped with the clock.
    t = T0
    for _ in range(10):
        t += 40_000_000
        tester.publish_clock(t)
        if wait_for(lambda: tester.count("image") >= 3, 0.3):
            break
    assert tester.count("image") >= 3, "no idle face before audio"
    assert tester.count("latent") == 0
    assert wait_for(lambda: tester.count("info") >= 1, 10), "no latched ~/info"
    info = json.loads(tester.get("info")[-1].data)
    assert info["checkpoint"] == "random" and info["image_size"] == IMAGE_SIZE

    audio = tone_stereo_int16(RATE, SECONDS)
    chunks = {}
    for name, size in (("speaker", 512), ("listener", 4096)):
        chunks[name] = [(AUDIO_T + i * NS // RATE, audio[i:i + size]) for i in range(0, len(audio), size)]
    pending = {k: list(v) for k, v in chunks.items()}
    lead = 200_000_000  # audio is published 200 ms ahead of its time
    end = AUDIO_T + int(SECONDS * NS)
    while t < end + 100_000_000:
        t += 10_000_000
        for name, pub in (("speaker", tester.speaker), ("listener", tester.listener)):
            while pending[name] and pending[name][0][0] <= t + lead:
                st, x = pending[name].pop(0)
                pub.publish(chunk_msg(x.reshape(-1), RATE, st, channels=2))
        tester.publish_clock(t)
        time.sleep(0.002)  # sim time at most ~5x real time: best-effort audio must not overrun DDS queues
        # stay within reach of the node (no skipping: catch_up_limit is large, this only bounds memory)
        due = (t - AUDIO_T) // 40_000_000 - 60
        wait_for(lambda d=due: node.stats_snapshot()["frames_published"] >= d, 30)

    expected = 48  # 2.0 s: frame n needs 40(n+1) + 60 ms of audio -> n <= 47
    # Nudge the clock (within the 5 s wait) until every due frame is out.
    for _ in range(600):
        if tester.count("latent") >= expected:
            break
        t += 1_000_000
        tester.publish_clock(t)
        wait_for(lambda: tester.count("latent") >= expected, 0.2)
    latents = sorted(tester.get("latent"), key=lambda m: m.frame_index)
    idx = [m.frame_index for m in latents]
    assert idx == list(range(expected)), f"frames {idx[:5]}..{idx[-5:]} ({len(idx)})"
    for m in latents:
        assert stamp_ns(m.header) == AUDIO_T + 40_000_000 * m.frame_index
        lat = np.asarray(m.latent, dtype=np.float32)
        assert lat.shape == (info["latent_dim"],) and np.isfinite(lat).all()
        assert m.profile == "lite" and m.checkpoint == "random"

    def stream_images():
        return [i for i in tester.get("image") if stamp_ns(i.header) >= AUDIO_T]

    assert wait_for(lambda: len(stream_images()) >= expected, 30)
    images = stream_images()
    assert len(images) == expected
    for im in images:
        assert im.encoding == "rgb8" and im.width == im.height == IMAGE_SIZE and im.step == 3 * IMAGE_SIZE
        assert len(im.data) == 3 * IMAGE_SIZE * IMAGE_SIZE
        assert (stamp_ns(im.header) - AUDIO_T) % 40_000_000 == 0
    states = tester.get("state")
    assert len(states) >= expected
    assert all(math.isfinite(s.processing_ms) and s.skipped_frames == 0 for s in states)
    # A tone on both channels: speaking and listening at once.
    assert sum(s.state == 3 for s in states) > expected // 2
    snap = node.stats_snapshot()
    assert snap["skipped_frames"] == 0 and snap["dropped_samples"] == 0
    assert snap["speaker_gap_samples"] == 0 and snap["listener_gap_samples"] == 0
    assert snap["bad_messages"] == 0

    # The same audio through the same scheduler and a fresh model session, offline: identical latents.
    # (Message sizes and tick timing must not matter: frames are decided in audio time.)
    offline = _offline_latents(chunks, expected, node.get_parameter("backend").value)
    for m in latents:
        np.testing.assert_allclose(np.asarray(m.latent, np.float32), offline[m.frame_index], rtol=1e-4,
                                   atol=1e-5, err_msg=f"frame {m.frame_index}")


def _offline_latents(chunks: dict, n_frames: int, backend: str) -> dict:
    from dystream_ros.audio import decode_pcm
    from dystream_ros.model import load_pipeline
    from dystream_ros.runtime.scheduler import FrameScheduler, SchedulerConfig

    pipe = load_pipeline(checkpoint="random", profile="lite", device="cpu", render=True, backend=backend)
    sess = pipe.start_session(pipe.default_reference(), seed=0)
    sched = FrameScheduler(SchedulerConfig(lookahead_samples=pipe.lookahead_samples,
                                           context_samples=pipe.config.audio.context_samples,
                                           catch_up_limit=10**6, speaker_wait_s=5.0, listener_wait_s=5.0))
    for name, items in chunks.items():
        for st, x in items:
            d = decode_pcm(x.reshape(-1).astype("<i2").tobytes(), "pcm_s16le", 2, RATE)
            sched.push(name, d.samples, d.sample_rate, st, arrival=0.0, now_ns=st)
    plan = sched.tick(AUDIO_T + int(SECONDS * NS), wall=0.0)
    assert [f.index for f in plan.frames] == list(range(n_frames))
    sess.push_audio(speaker=plan.speaker, listener=plan.listener)
    return {f.index: sess.step().latent for f in plan.frames}


def _call(probe, srv_type, name, req, timeout=30.0):
    cli = probe.create_client(srv_type, name)
    try:
        assert cli.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        fut = cli.call_async(req)
        assert wait_for(fut.done, timeout), f"{name} timed out"
        return fut.result()
    finally:
        probe.destroy_client(cli)


def _set_params(probe, **values):
    from rcl_interfaces.srv import SetParameters

    req = SetParameters.Request()
    req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return _call(probe, SetParameters, "/dystream_node/set_parameters", req).results


def test_compressed_output_is_advertised_only_while_enabled(sim):
    node, probe = sim
    topic = "/face_image/compressed"

    def advertised():
        return len(probe.get_publishers_info_by_topic(topic))

    assert advertised() == 0 and len(probe.get_publishers_info_by_topic("/face_image")) == 1
    t = [node.get_clock().now().nanoseconds]

    def nudged_until(cond) -> bool:  # the producer thread applies the change at its next tick
        for _ in range(200):
            if cond():
                return True
            t[0] += 40_000_000
            probe.publish_clock(t[0])
            time.sleep(0.05)
        return cond()

    assert all(r.successful for r in _set_params(probe, publish_compressed=True))
    assert nudged_until(lambda: advertised() == 1)
    assert all(r.successful for r in _set_params(probe, publish_compressed=False))
    assert nudged_until(lambda: advertised() == 0)


def test_runtime_parameters_are_validated(sim):
    node, probe = sim
    ok = _set_params(probe, steps=3, guidance_speaker=2.0, catch_up_limit=4, listener_wait_ms=150.0,
                     publish_compressed=True, temperature=1.0, head_temperature=0.8)
    assert all(r.successful for r in ok), [r.reason for r in ok]
    assert node.get_parameter("steps").value == 3 and node.get_parameter("temperature").value == 1.0
    assert node.get_parameter("head_temperature").value == 0.8
    cfg = node._engine.scheduler.config
    assert cfg.catch_up_limit == 4 and cfg.listener_wait_s == 0.15
    for bad in ({"steps": 11}, {"steps": 0}, {"catch_up_limit": 0}, {"guidance_listener": -1.0},
                {"jpeg_quality": 101}, {"steps": "three"}, {"profile": "base"}, {"checkpoint": "x"},
                {"device": "cuda"}, {"temperature": 2.5}, {"temperature": -1.0},
                {"head_temperature": 3.0}):
        (res,) = _set_params(probe, **bad)
        assert not res.successful and res.reason, bad
    assert node.get_parameter("steps").value == 3 and node.get_parameter("profile").value == "lite"
    _set_params(probe, steps=5, guidance_speaker=1.0, catch_up_limit=10000, listener_wait_ms=5000.0,
                publish_compressed=False, temperature=0.5, head_temperature=0.5)


def test_reset_and_set_reference_services(sim, refdir):
    import cv2
    from dystream_ros.srv import SetReference
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    node, probe = sim
    assert _call(probe, Trigger, "/dystream_node/reset", Trigger.Request()).success
    assert not node._engine.scheduler.active and node._engine.scheduler.next_frame == 0

    req = SetReference.Request()
    img = np.zeros((64, 80, 3), np.uint8)
    img[..., 0] = 255  # blue in bgr8
    req.image = Image(height=64, width=80, encoding="bgr8", step=240, data=img.tobytes())
    res = _call(probe, SetReference, "/dystream_node/set_reference", req)
    assert res.success, res.message
    idle = node._outputs.idle_image
    assert idle.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and idle[..., 2].mean() == 255

    path = refdir / "face.png"
    cv2.imwrite(str(path), np.full((100, 100, 3), 40, np.uint8))
    req = SetReference.Request(path=str(path))
    assert _call(probe, SetReference, "/dystream_node/set_reference", req).success
    yuv = Image(height=2, width=2, encoding="yuv422", step=4, data=b"\0" * 8)
    for bad in (SetReference.Request(path=str(refdir / "missing.png")), SetReference.Request(),
                SetReference.Request(image=yuv)):
        res = _call(probe, SetReference, "/dystream_node/set_reference", bad)
        assert not res.success and res.message


def test_set_reference_refuses_hostile_requests_and_the_node_lives_on(sim, refdir, tmp_path):
    """Paths and images that used to crash the node or read any file: each answers success=false with
    a clear message, reveals nothing about paths outside reference_dirs, and the node keeps publishing."""
    import cv2
    from dystream_ros.srv import SetReference
    from sensor_msgs.msg import Image

    node, probe = sim
    outside = tmp_path / "private.png"  # a readable image outside reference_dirs
    cv2.imwrite(str(outside), np.full((100, 100, 3), 7, np.uint8))
    (refdir / "notes.png").write_bytes(b"not an image at all")
    cv2.imwrite(str(refdir / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    (refdir / "link.png").symlink_to(outside)  # a link inside pointing outside
    big = np.zeros((3000, 3000, 3), np.uint8)
    cases = {
        "long name": ("x" * 304 + ".png", "outside reference_dirs"),
        "long name inside": (str(refdir / ("x" * 304 + ".png")), "cannot read image file"),
        "unknown home": ("~nosuchuser/face.png", "outside reference_dirs"),
        "outside, exists": (str(outside), "outside reference_dirs"),
        "outside, missing": (str(tmp_path / "nothing.png"), "outside reference_dirs"),
        "symlink out": (str(refdir / "link.png"), "outside reference_dirs"),
        "not an image": (str(refdir / "notes.png"), "cannot decode"),
        "1x1": (str(refdir / "tiny.png"), "smaller than reference_min_side"),
        "nul": ("face\0.png", "outside reference_dirs"),  # DDS strings end at the NUL: "face"
    }
    for what, (path, needle) in cases.items():
        res = _call(probe, SetReference, "/dystream_node/set_reference", SetReference.Request(path=path))
        assert not res.success and needle in res.message, (what, res.message)
    # the two "outside" answers are identical whether the file exists or not
    srv = "/dystream_node/set_reference"
    msgs = {_call(probe, SetReference, srv, SetReference.Request(path=cases[k][0])).message
            for k in ("outside, exists", "outside, missing")}
    assert len(msgs) == 1 and str(tmp_path) not in msgs.pop()
    for w, h, data in ((1, 1, b"\0" * 3), (3000, 3000, big.tobytes())):
        req = SetReference.Request(image=Image(height=h, width=w, encoding="rgb8", step=3 * w, data=data))
        res = _call(probe, SetReference, "/dystream_node/set_reference", req)
        assert not res.success and "reference_m" in res.message, (w, h, res.message)
    # still alive and publishing (idle faces come with the clock)
    n = probe.count("image")
    t = node.get_clock().now().nanoseconds
    for _ in range(100):
        if probe.count("image") >= n + 3:
            break
        t += 40_000_000
        probe.publish_clock(t)
        time.sleep(0.05)
    assert probe.count("image") >= n + 3


def test_interrupt_service_and_topic_drop_queued_speech(sim):
    """Barge-in over DDS: a 2 s TTS burst is queued ahead of the clock; ``~/interrupt`` drops what is
    still queued (the answer and the diagnostics count the same samples), the frames after it are
    listening frames, and the ``interrupt`` topic does the same."""
    from std_msgs.msg import Empty
    from std_srvs.srv import Trigger

    node, probe = sim
    assert _call(probe, Trigger, "/dystream_node/reset", Trigger.Request()).success
    t = node.get_clock().now().nanoseconds
    a0 = t + 100_000_000
    rate, seconds = 16000, 2.0
    tone = tone_stereo_int16(rate, seconds)[:, 0]
    for i in range(0, len(tone), 8000):  # the whole utterance at once, in 0.5 s messages
        probe.send("speaker", chunk_msg(tone[i:i + 8000], rate, a0 + i * NS // rate))
        probe.send("listener", chunk_msg(tone[i:i + 8000], rate, a0 + i * NS // rate))
    assert wait_for(lambda: node.stats_snapshot()["speaker_messages"] >= 4
                    and node.stats_snapshot()["listener_messages"] >= 4, 30)

    def run_clock_to(end_ns: int, frames: int) -> None:
        nonlocal t
        while t < end_ns:
            t += 10_000_000
            probe.publish_clock(t)
            due = min(frames, (t - a0) // 40_000_000 - 3)
            wait_for(lambda d=due: node._engine.scheduler.next_frame >= d, 5)

    run_clock_to(a0 + 400_000_000, 8)
    assert wait_for(lambda: node._engine.scheduler.next_frame >= 8, 30)
    res = _call(probe, Trigger, "/dystream_node/interrupt", Trigger.Request())
    assert res.success, res.message
    first_silent = int(res.message.rsplit("silent from frame ", 1)[1])
    assert first_silent >= 8
    snap = node.stats_snapshot()
    dropped = snap["speaker_interrupted_samples"]
    assert snap["speaker_interrupts"] == 1 and f"dropped {dropped} queued speaker samples" in res.message
    assert dropped >= (50 - first_silent - 2) * 640  # the rest of the 2 s burst (the ring may hold less)

    run_clock_to(a0 + 1_800_000_000, 40)
    assert wait_for(lambda: node._engine.scheduler.next_frame >= 40, 30)

    def stream_states() -> dict:
        return {s.frame_index: s.state for s in probe.get("state") if stamp_ns(s.header) >= a0}

    assert wait_for(lambda: set(range(40)) <= set(stream_states()), 30)
    states = stream_states()
    assert all(states[n] == 3 for n in range(first_silent) if n in states)  # both speaking
    after = [states[n] for n in range(first_silent, 40) if n in states]
    assert len(after) == 40 - first_silent and set(after) == {2}  # listening only

    pub = probe.create_publisher(Empty, "/interrupt", 10)
    assert wait_for(lambda: pub.get_subscription_count() >= 1, 10)
    pub.publish(Empty())
    assert wait_for(lambda: node.stats_snapshot()["speaker_interrupts"] == 2, 10)
    probe.destroy_publisher(pub)
