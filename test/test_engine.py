"""AvatarEngine: the one streaming path (settings -> session + scheduler + feeder) the node, replay, render,
training evaluation and bench drive. ROS-free; a random tiny model keeps it fast."""

from __future__ import annotations

import numpy as np
import pytest
from test_model_helpers import tiny_config

from dystream_ros.runtime.engine import STATES, AvatarEngine, EngineError, avatar_state, scheduler_config
from dystream_ros.runtime.session import load_pipeline
from dystream_ros.runtime.settings import Settings

REF = np.full((64, 64, 3), 120, np.uint8)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(checkpoint="random", profile=tiny_config(), render=False, backend="torch")


def _audio(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal(n)).astype(np.float32)


def test_offline_stream_equals_the_session_fed_everything(pipe):
    """The offline driver goes through scheduler and feeder, chunk by chunk on a simulated clock; the
    model sees exactly the audio it would see if handed everything at once."""
    spf = pipe.samples_per_frame
    spk, lis = _audio(37 * spf + 100, 1), _audio(30 * spf, 2)
    engine = AvatarEngine(Settings(warmup_frames=3, num_threads=0), pipe=pipe, reference=REF)
    outs = list(engine.offline(spk, lis))
    assert [o.job.index for o in outs] == list(range(38))  # ceil(len / 640) frames of the longer one
    sess = pipe.start_session(REF, seed=0)
    n = 38 * spf + pipe.lookahead_samples
    sess.push_audio(speaker=np.pad(spk, (0, n - len(spk))), listener=np.pad(lis, (0, n - len(lis))))
    direct = [sess.step().latent for _ in range(38)]
    np.testing.assert_allclose(np.stack([o.frame.latent for o in outs]), np.stack(direct), atol=1e-5)
    # the stream's stamps, levels and states
    assert outs[1].job.stamp_ns - outs[0].job.stamp_ns == 40_000_000
    assert all(o.state == avatar_state(o.job.speaker_level_db, o.job.listener_level_db, -45.0) for o in outs)
    assert outs[-1].state in (STATES["speaking"], STATES["idle"])  # the listener ended before the speaker


def test_offline_twice_gives_the_same_frames(pipe):
    engine = AvatarEngine(Settings(warmup_frames=0, num_threads=0), pipe=pipe, reference=REF)
    spk, lis = _audio(10 * 640, 3), _audio(10 * 640, 4)
    a = [o.frame.latent for o in engine.offline(spk, lis)]
    b = [o.frame.latent for o in engine.offline(spk, lis)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_states_match_the_message_constants():
    msg = pytest.importorskip("dystream_ros.msg")
    s = msg.AvatarState
    assert STATES == {"idle": s.STATE_IDLE, "speaking": s.STATE_SPEAKING, "listening": s.STATE_LISTENING,
                      "both": s.STATE_BOTH}


def test_updates_validate_and_reach_scheduler_and_session(pipe):
    engine = AvatarEngine(Settings(warmup_frames=0, num_threads=0), pipe=pipe, reference=REF)
    engine.update(catch_up_limit=3, listener_wait_ms=150.0, steps=2, temperature=0.9)
    assert engine.scheduler.config.catch_up_limit == 3 and engine.scheduler.config.listener_wait_s == 0.15
    engine.run(1, wall=0.0)  # the session takes its settings before the next frame
    assert engine.session.steps == 2 and engine.session.temperature == 0.9
    with pytest.raises(ValueError, match="read-only"):
        engine.update(profile="base")
    with pytest.raises(ValueError, match="steps must be in"):
        engine.update(steps=11)
    assert engine.settings.steps == 2  # a refused update changes nothing


def test_lookahead_shorter_than_the_model_is_refused(pipe):
    """One rule for every driver (replay used to raise it silently to the model's)."""
    short = pipe.lookahead_ms - 20
    with pytest.raises(EngineError, match="shorter than the model"):
        scheduler_config(Settings(lookahead_ms=short), pipe)
    longer = scheduler_config(Settings(lookahead_ms=pipe.lookahead_ms + 40), pipe)
    assert longer.lookahead_samples == pipe.lookahead_samples + 640


def test_reference_file_requests_stay_inside_reference_dirs(pipe, tmp_path):
    import cv2

    from dystream_ros.io.images import ReferenceRefused

    inside, outside = tmp_path / "faces", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    cv2.imwrite(str(inside / "a.png"), np.full((80, 80, 3), 50, np.uint8))
    cv2.imwrite(str(outside / "b.png"), np.full((80, 80, 3), 50, np.uint8))
    engine = AvatarEngine(Settings(warmup_frames=0, num_threads=0, reference_dirs=str(inside)), pipe=pipe,
                          reference=REF)
    img, name = engine.load_reference_file(str(inside / "a.png"))
    assert img.shape == (80, 80, 3) and name == "a.png"
    for bad in (outside / "b.png", outside / "missing.png"):  # same answer whether it exists or not
        with pytest.raises(ReferenceRefused, match="outside reference_dirs"):
            engine.load_reference_file(str(bad))


def test_interrupt_drops_queued_speech_and_the_model_hears_silence_from_the_next_frame(pipe):
    """Barge-in: a TTS burst queued ahead of time is dropped from the next frame on, in the scheduler's
    buffer and in the lookahead the session already holds; the drop is counted, the face goes on
    listening, and the frames equal those of a session fed silence from that sample."""
    spf = pipe.samples_per_frame
    engine = AvatarEngine(Settings(warmup_frames=0, num_threads=0, speaker_wait_ms=5000.0,
                                   listener_wait_ms=5000.0, catch_up_limit=1000), pipe=pipe, reference=REF)
    t0 = 5 * 10**9
    spk, lis = _audio(50 * spf, 5), _audio(50 * spf, 6)  # 2 s each, loud on both channels
    engine.push("speaker", spk, 16000, t0, arrival=0.0, now_ns=t0)  # the whole burst at once
    engine.push("listener", lis[: 12 * spf], 16000, t0, arrival=0.0, now_ns=t0)
    before = engine.run(t0 + 10 * 40_000_000, wall=0.4)
    assert [o.job.index for o in before] == list(range(10))
    assert all(o.state == STATES["both"] for o in before)

    first, dropped = engine.interrupt("speaker", wall=0.41)
    assert first == 10 and dropped == 40 * spf  # frames 10..49 of the burst: all from the next frame on
    st = engine.scheduler.channels["speaker"].stats
    assert st.interrupts == 1 and st.interrupted_samples == dropped
    # speech of the interrupted span still arriving is late (counted), not spoken
    late_before = st.late_samples
    engine.push("speaker", spk[20 * spf: 21 * spf], 16000, t0 + 20 * 40_000_000, arrival=0.42, now_ns=t0)
    assert st.late_samples == late_before + spf

    engine.push("listener", lis[12 * spf:], 16000, t0 + 12 * 40_000_000, arrival=0.42, now_ns=t0)
    after = engine.run(t0 + 45 * 40_000_000, wall=1.8)
    assert [o.job.index for o in after] == list(range(10, 46))
    assert all(o.state == STATES["listening"] for o in after)

    # the same frames from a session that heard the speech up to frame 9's lookahead, then silence from
    # frame 10's first sample on (the part of frame 9's lookahead it already held included)
    sess = pipe.start_session(REF, seed=0)
    held = 10 * spf + pipe.lookahead_samples
    sess.push_audio(speaker=spk[:held], listener=lis[:held])
    direct = [sess.step().latent for _ in range(10)]
    sess.silence("speaker", 10 * spf)
    n = 46 * spf + pipe.lookahead_samples
    sess.push_audio(speaker=np.zeros(n - held, np.float32), listener=lis[held:n])
    direct += [sess.step().latent for _ in range(36)]
    got = np.stack([o.frame.latent for o in before + after])
    np.testing.assert_allclose(got, np.stack(direct), atol=1e-5)
    # and the speech did drive the uninterrupted stream: the interrupt changed the frames after it
    sess = pipe.start_session(REF, seed=0)
    sess.push_audio(speaker=spk[:n], listener=lis[:n])
    spoken = np.stack([sess.step().latent for _ in range(46)])
    assert np.abs(spoken[12:] - got[12:]).max() > 1e-3


def test_interrupt_without_a_stream_drops_nothing(pipe):
    engine = AvatarEngine(Settings(warmup_frames=0, num_threads=0), pipe=pipe, reference=REF)
    assert engine.interrupt("speaker", wall=0.0) == (0, 0)
    assert engine.scheduler.channels["speaker"].stats.interrupts == 0


def test_render_thread_publishes_in_order_the_images_of_inline_rendering(tmp_path):
    """produce() with render_thread: the model steps here, the decoder runs on the render thread, frames
    reach publish in frame order with the same latents and images as rendering inline; a reference
    changed while frames wait does not change the face they were stepped with."""
    import threading

    pipe = load_pipeline(checkpoint="random", profile=tiny_config(), render=True, backend="torch")
    spf = pipe.samples_per_frame
    spk, lis = _audio(30 * spf, 7), _audio(30 * spf, 8)

    def run(render_thread: bool, swap_at: int | None = None):
        engine = AvatarEngine(Settings(warmup_frames=0, num_threads=0, render_thread=render_thread,
                                       catch_up_limit=1000), pipe=pipe, reference=REF)
        got, threads = [], set()

        def publish(out):
            got.append(out)
            threads.add(threading.current_thread().name)

        t0 = 10**9
        engine.push("speaker", spk, 16000, t0, arrival=0.0, now_ns=t0)
        engine.push("listener", lis, 16000, t0, arrival=0.0, now_ns=t0)
        for n in range(1, 30):
            engine.produce(engine.tick(t0 + n * 40_000_000, wall=n * 0.04), publish, pytest.fail)
            if n == swap_at:
                engine.set_reference(np.full((64, 64, 3), 30, np.uint8))
        assert engine.drain()
        engine.close()
        return got, threads

    inline, t_inline = run(False)
    threaded, t_threaded = run(True)
    assert t_inline == {threading.current_thread().name} and t_threaded == {"dystream_render"}
    assert [o.job.index for o in threaded] == [o.job.index for o in inline] and len(inline) > 20
    for a, b in zip(inline, threaded, strict=True):
        np.testing.assert_array_equal(a.frame.latent, b.frame.latent)
        assert np.abs(a.frame.image.astype(int) - b.frame.image.astype(int)).max() <= 1
        assert b.frame.timings["render"] > 0 and b.step_ms >= b.frame.timings["render"]
    swapped, _ = run(True, swap_at=5)
    # frames stepped before the swap keep the old face (those after it differ from the inline run)
    same = [np.array_equal(a.frame.image, b.frame.image) for a, b in zip(inline, swapped, strict=True)]
    assert all(same[:4]) and not all(same[6:])
