"""Frame scheduler: due frames in audio time, pacing, catch-up/skip, waits, clock jumps (no ROS).

Everything is driven by a simulated clock, the way the offline replay drives it.
"""

import numpy as np
import pytest

from dystream_ros.runtime.scheduler import FrameScheduler, SchedulerConfig

MS = 1_000_000
SPF = 640
L = 960
T0 = 1_000_000 * MS  # stream start stamp: 1000 s


def make(**kw):
    kw.setdefault("lookahead_samples", L)
    kw.setdefault("catch_up_limit", 3)
    return FrameScheduler(SchedulerConfig(**kw))


def chunk(n, value=0.1):
    return np.full(n, value, np.float32)


def run_live(sched, seconds, chunk_ms=20, listener=True, tick_ms=40, start=T0, value=0.1):
    """Real-time audio in chunk_ms chunks (stamp = first sample), ticks every tick_ms after the audio."""
    frames, plans = [], []
    n_chunks = int(seconds * 1000 / chunk_ms)
    per = 16 * chunk_ms
    t = start
    next_tick = start
    for _ in range(n_chunks):
        now = t + chunk_ms * MS  # the chunk is complete at its end
        sched.push("speaker", chunk(per, value), 16000, t, arrival=now / 1e9, now_ns=now)
        if listener:
            sched.push("listener", chunk(per, -value), 16000, t, arrival=now / 1e9, now_ns=now)
        t = now
        while next_tick <= now:
            p = sched.tick(next_tick, wall=next_tick / 1e9)
            plans.append(p)
            frames += p.frames
            next_tick += tick_ms * MS
    return frames, plans


def test_live_stream_frames_stamps_and_audio():
    s = make()
    frames, plans = run_live(s, 2.0)
    idx = [f.index for f in frames]
    assert idx == list(range(len(idx)))  # every frame, in order, none skipped
    # audio up to 2000 ms has arrived: frame n needs 40(n+1)+60 ms -> n <= 47
    assert idx[-1] == 47
    assert all(f.stamp_ns == T0 + 40 * MS * f.index for f in frames)
    assert s.stats.skipped_frames == 0 and s.stats.silence_samples == 0
    assert plans[0].idle is False and any(p.stream_started for p in plans)
    # The audio handed over is contiguous and exactly the input.
    sp = np.concatenate([p.speaker for p in plans if p.frames])
    li = np.concatenate([p.listener for p in plans if p.frames])
    assert sp.size == s.need_end(47) and np.all(sp == np.float32(0.1)) and np.all(li == np.float32(-0.1))
    # Each frame became ready when its last needed sample arrived (20 ms chunks): ready <= publish
    for f in frames:
        need_end_s = (T0 / 1e9) + (40 * (f.index + 1) + 60) / 1000
        assert need_end_s - 1e-9 <= f.ready_wall <= need_end_s + 0.020 + 1e-9
        assert f.start_wall == pytest.approx(T0 / 1e9 + 0.040 * f.index + 0.020, abs=0.0201)
        assert f.waited == ()


def test_frames_never_ahead_of_the_clock_for_a_burst():
    """A TTS node publishes 5 s of speech at once: buffered, frames paced at 25 Hz by the clock."""
    s = make(listener_wait_s=0.0, speaker_wait_s=0.0)
    s.push("speaker", chunk(16000 * 5), 16000, T0, arrival=0.0, now_ns=T0)
    produced = []
    for k in range(0, 200):
        now = T0 + k * 40 * MS
        p = s.tick(now, wall=now / 1e9)
        for f in p.frames:
            assert f.stamp_ns <= now  # never produced ahead of the clock
            produced.append(f.index)
        # pacing: by time now, at most the frames whose stamps passed
        assert len(produced) <= (now - T0) // (40 * MS) + 1
    assert produced == list(range(len(produced))) and s.stats.skipped_frames == 0
    # the listener never arrived: it counts as silence (wait 0) -> frames flow at the clock rate
    assert len(produced) >= 190


def test_missing_listener_waits_then_silence():
    s = make(listener_wait_s=0.2)
    frames, _ = run_live(s, 1.0, listener=False)
    assert frames, "a missing listener must not block the stream forever"
    for f in frames:
        assert f.waited == ("listener",)
        # due by the wait: origin + 40(n+1)+60 ms + 200 ms <= tick time
        assert f.ready_wall >= (T0 / 1e9) + (40 * (f.index + 1) + 60 + 200) / 1000 - 1e-9
    assert s.stats.silence_samples > 0
    assert frames[-1].listener_level_db == -120.0


def test_catch_up_limit_skips_oldest_and_counts():
    s = make(catch_up_limit=3)
    for k in range(100):  # 2 s of audio, no tick in between (the node was busy)
        t = T0 + k * 20 * MS
        s.push("speaker", chunk(320), 16000, t, arrival=0.0, now_ns=t)
        s.push("listener", chunk(320), 16000, t, arrival=0.0, now_ns=t)
    p = s.tick(T0 + 2000 * MS, wall=2.0)
    assert [f.index for f in p.frames] == [45, 46, 47]
    assert p.skipped == 45 and s.stats.skipped_frames == 45 and s.stats.session_skipped_frames == 45
    assert p.audio_start == 45 * SPF - s.config.context_samples
    assert p.speaker.size == s.need_end(47) - p.audio_start
    assert s.next_frame == 48


def test_context_samples_are_handed_over_after_a_skip():
    s = make(catch_up_limit=1, context_samples=1000)
    s.push("speaker", chunk(16000), 16000, T0, arrival=0.0, now_ns=T0)
    s.push("listener", chunk(16000), 16000, T0, arrival=0.0, now_ns=T0)
    p = s.tick(T0 + 1000 * MS, wall=1.0)
    n = p.frames[0].index
    assert p.audio_start == n * SPF - 1000


def test_gap_becomes_silence_and_stream_continues():
    # When audio resumes after a gap, the frames that waited (wait / 40 ms of them) become due at once:
    # the catch-up limit must cover that burst (the default does), or they are skipped.
    s = make(listener_wait_s=0.2, speaker_wait_s=0.2, catch_up_limit=8)
    frames, _ = run_live(s, 1.0)
    # 3 s without audio, then audio again at its stamp
    t = T0 + 1000 * MS
    for k in range(75):
        now = t + k * 40 * MS
        frames += s.tick(now, wall=now / 1e9).frames
    frames2, _ = run_live(s, 1.0, start=T0 + 4000 * MS)
    frames += frames2
    idx = [f.index for f in frames]
    assert idx == list(range(len(idx))) and s.stats.skipped_frames == 0
    assert s.origin_ns == T0  # same stream: stamps continue on the 40 ms grid
    gap_frames = [f for f in frames if 30 <= f.index < 95]
    assert all(f.speaker_level_db == -120.0 for f in gap_frames)
    assert frames[-1].speaker_level_db > -30


def test_clock_backwards_resets_stream():
    s = make()
    run_live(s, 1.0)
    assert s.next_frame > 0
    p = s.tick(T0 - 5000 * MS, wall=0.0)
    assert p.reset_reason and "back" in p.reset_reason and p.idle
    assert s.stats.clock_resets == 1 and not s.active and s.next_frame == 0
    frames, plans = run_live(s, 0.5, start=T0 - 5000 * MS)
    assert frames[0].index == 0 and frames[0].stamp_ns == T0 - 5000 * MS
    assert sum(p.stream_started for p in plans) == 1


def test_forward_clock_jump_resets_stream():
    s = make(max_clock_jump_s=5.0)
    run_live(s, 0.5)
    p = s.tick(T0 + 3600 * 1000 * MS, wall=0.0)
    assert p.reset_reason and "forward" in p.reset_reason
    assert s.stats.skipped_frames == 0  # an hour of nothing is not 90000 skipped frames


def test_slow_caller_skips_instead_of_resetting_by_default():
    s = make(catch_up_limit=8)
    run_live(s, 0.5)
    n = s.next_frame
    p = s.tick(T0 + 8000 * MS, wall=0.0)  # the caller stalled for 7.5 s (both channels silent since)
    assert p.reset_reason is None and p.skipped > 0 and len(p.frames) == 8
    assert s.stats.skipped_frames == p.skipped and p.frames[0].index == n + p.skipped
    s.reset(clock_jump=True)
    assert s.stats.clock_resets == 1 and not s.active


def test_zero_and_far_off_stamps_are_replaced():
    s = make(max_stamp_skew_s=10.0)
    now = T0
    res = s.push("speaker", chunk(320), 16000, 0, arrival=0.0, now_ns=now)
    assert res.restamped and s.origin_ns == now - 20 * MS
    res = s.push("speaker", chunk(320), 16000, now + 3600 * 1000 * MS, arrival=0.0, now_ns=now + 20 * MS)
    assert res.restamped and s.stats.restamped_messages == 2


def test_late_audio_is_dropped_and_counted():
    s = make(listener_wait_s=0.0)
    frames, _ = run_live(s, 1.0, listener=False)
    # the listener finally arrives for the start of the stream: too late, it was produced with silence
    res = s.push("listener", chunk(1600), 16000, T0, arrival=1.0, now_ns=T0 + 1000 * MS)
    assert res.write.late == 1600
    assert s.channels["listener"].stats.late_samples == 1600


def test_overflow_is_bounded_and_counted():
    s = make(buffer_s=2.0)
    s.push("speaker", chunk(16000 * 5), 16000, T0, arrival=0.0, now_ns=T0)
    st = s.channels["speaker"].stats
    assert st.samples_in == 32000 and st.overflow_samples == 48000


def test_same_inputs_same_plans():
    a, b = make(), make()
    fa, _ = run_live(a, 1.0)
    fb, _ = run_live(b, 1.0)
    key = [(f.index, f.stamp_ns, f.ready_wall) for f in fa]
    assert key == [(f.index, f.stamp_ns, f.ready_wall) for f in fb]


def test_44k_chunks_on_the_exact_grid():
    """512- and 4096-sample chunks at 44.1 kHz stamped by their first sample land sample-exactly."""
    s = make(listener_wait_s=1.0, speaker_wait_s=1.0)
    total = 44100 * 2
    for name, n in (("speaker", 512), ("listener", 4096)):
        for i in range(0, total, n):
            m = min(n, total - i)
            stamp = T0 + i * 10**9 // 44100
            s.push(name, chunk(m), 44100, stamp, arrival=0.0, now_ns=T0)
    assert s.channels["speaker"].stats.gaps == 0 and s.channels["listener"].stats.gaps == 0
    p = s.tick(T0 + 2000 * MS, wall=0.0)
    # 32000 samples minus the resampler's held-back tail: frame 47 needs 31680 samples
    assert p.frames[-1].index == 47


def test_update_validates():
    s = make()
    s.update(catch_up_limit=5, listener_wait_s=0.5)
    assert s.config.catch_up_limit == 5
    with pytest.raises(ValueError):
        s.update(catch_up_limit=0)
    with pytest.raises(ValueError):
        s.update(buffer_s=3.0)


def test_has_due_tells_when_audio_completes_a_frame():
    s = make()
    assert not s.has_due(T0)
    s.push("speaker", chunk(1600), 16000, T0, arrival=0.0, now_ns=T0)
    assert not s.has_due(T0 + 100 * MS)  # the listener has not arrived (wait 200 ms)
    s.push("listener", chunk(1600), 16000, T0, arrival=0.0, now_ns=T0)
    assert s.has_due(T0 + 100 * MS)  # 100 ms = frame 0's audio + lookahead
    assert not s.has_due(T0 - MS)  # ... but not before its stamp
    s.tick(T0 + 100 * MS, wall=0.0)
    assert not s.has_due(T0 + 100 * MS)


def test_pending_frames_is_the_backlog():
    s = make(catch_up_limit=3)
    assert s.pending_frames(T0) == 0  # no stream
    s.push("speaker", chunk(16000), 16000, T0, arrival=0.0)
    s.push("listener", chunk(16000), 16000, T0, arrival=0.0)
    # 1 s of audio: frames 0..23 have audio + 60 ms lookahead; at T0 + 400 ms frames 0..10 are due
    assert s.pending_frames(T0 + 400 * MS) == 11
    plan = s.tick(T0 + 400 * MS, wall=0.0)
    assert len(plan.frames) == 3 and plan.skipped == 8
    assert s.pending_frames(T0 + 400 * MS) == 0 and not s.has_due(T0 + 400 * MS)
    assert s.pending_frames(T0 + 480 * MS) == 2
    assert s.pending_frames(T0 + 300 * MS) == 0  # a clock behind the last tick: nothing


def test_rate_gate_holds_the_rate_under_tick_jitter():
    from dystream_ros.runtime.scheduler import RateGate

    rng = np.random.default_rng(0)
    gate = RateGate()
    ticks = [T0 + k * 40 * MS + int(rng.uniform(0, 15) * MS) for k in range(1000)]  # 40 ms timer, late
    assert sum(gate(t, 25.0) for t in ticks) == 1000  # every tick publishes once: exactly 25 Hz
    gate.reset()
    n10 = sum(gate(t, 10.0) for t in ticks)  # 40 s of ticks at 10 Hz
    assert 399 <= n10 <= 401
    assert not gate(ticks[-1] + 1 * MS, 10.0)  # never twice in one slot
    assert gate(T0, 10.0)  # the clock went back (bag loop): a new grid, publishes at once
    assert not gate(T0, 0.0)  # 0 Hz: off


def _robot(s, seconds, speaker_until_s, burst_at_s=None, burst_s=1.0, lead_ms=300):
    """Live listener in 20 ms chunks; the speaker live until ``speaker_until_s``, then silent; at
    ``burst_at_s`` a TTS burst of ``burst_s`` stamped ``lead_ms`` ahead. Returns {frame index: tick ns}."""
    produced, t, next_tick = {}, T0, T0
    while t < T0 + int(seconds * 1000) * MS:
        now = t + 20 * MS
        s.push("listener", chunk(320, -0.1), 16000, t, arrival=now / 1e9, now_ns=now)
        if t < T0 + int(speaker_until_s * 1000) * MS:
            s.push("speaker", chunk(320), 16000, t, arrival=now / 1e9, now_ns=now)
        if burst_at_s is not None and t == T0 + int(burst_at_s * 1000) * MS:  # 20 ms chunks, at once
            for k in range(int(burst_s * 50)):
                s.push("speaker", chunk(320, 0.3), 16000, now + lead_ms * MS + k * 20 * MS,
                       arrival=now / 1e9, now_ns=now)
        t = now
        while next_tick <= now:
            for f in s.tick(next_tick, wall=next_tick / 1e9).frames:
                produced[f.index] = next_tick
            next_tick += 40 * MS
    return produced


def _latency_ms(produced, n):
    return (produced[n] - (T0 + 40 * MS * n)) / MS


def test_an_idle_speaker_channel_stops_holding_frames_back():
    """The robot stops speaking: for its wait plus channel_idle_s the frames wait for the speaker channel
    (late audio still counts), then they follow the microphone alone; a TTS burst stamped ahead is
    used whole when it comes."""
    s = make(speaker_wait_s=0.2, listener_wait_s=0.2, channel_idle_s=0.5, catch_up_limit=8)
    produced = _robot(s, 4.0, speaker_until_s=1.0, burst_at_s=3.0)
    assert sorted(produced) == list(range(len(produced))) and s.stats.skipped_frames == 0
    mic_bound = _latency_ms(produced, 10)  # both channels live: the frame + lookahead + chunk
    assert mic_bound <= 120
    # until 1.0 + 0.2 + 0.5 s the silent speaker channel holds frames back by its wait (+ lookahead and
    # frame: 300 ms), then by less and less: two frames a tick until the microphone sets the pace again
    assert 300 <= _latency_ms(produced, 30) <= 340  # (produced at the next 40 ms tick)
    lat = [_latency_ms(produced, n) for n in range(30, 56)]
    assert all(b <= a for a, b in zip(lat, lat[1:], strict=False))  # catching up, never falling behind
    # after that: the microphone alone sets the pace again
    assert _latency_ms(produced, 55) == mic_bound and _latency_ms(produced, 70) == mic_bound
    # the burst (3.32 s .. 4.32 s) arrived ahead of its frames: none of it late, every frame of it at
    # the microphone's pace and with its audio
    assert s.channels["speaker"].stats.late_samples == 0
    assert _latency_ms(produced, 85) == mic_bound and _latency_ms(produced, 90) == mic_bound


def test_channel_idle_zero_always_waits():
    s = make(speaker_wait_s=0.2, listener_wait_s=0.2, channel_idle_s=0.0, catch_up_limit=8)
    produced = _robot(s, 3.0, speaker_until_s=1.0)
    assert _latency_ms(produced, 60) >= _latency_ms(produced, 10) + 150  # still waiting at 2.4 s


def test_live_speaker_after_a_pause_loses_only_what_came_too_late():
    """A speaker stream stamped at capture time that resumes after a pause, its first chunk arriving
    100 ms late: the frames of that time were produced already (the channel was idle), so those samples
    are dropped and counted; the rest of the utterance drives the frames."""
    s = make(speaker_wait_s=0.2, listener_wait_s=0.2, channel_idle_s=0.5, catch_up_limit=8)
    _robot(s, 2.0, speaker_until_s=0.5)
    t = T0 + 2000 * MS
    s.push("speaker", chunk(1600, 0.3), 16000, t - 100 * MS, arrival=t / 1e9, now_ns=t)  # 100 ms, late
    n0 = s.next_frame
    s.push("speaker", chunk(1600, 0.3), 16000, t, arrival=t / 1e9, now_ns=t)  # confirms the first
    late = s.channels["speaker"].stats.late_samples
    assert 0 < late < 1600  # the part of the first chunk whose frames were produced already
    s.push("listener", chunk(3200, -0.1), 16000, t, arrival=t / 1e9, now_ns=t)
    p = s.tick(t + 200 * MS, wall=(t + 200 * MS) / 1e9)
    assert p.frames and p.frames[0].index == n0
    assert any(f.speaker_level_db > -20 for f in p.frames)  # the utterance's audio reached its frames
    assert s.channels["speaker"].stats.late_samples == late
