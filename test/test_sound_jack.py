"""Real PortAudio (sounddevice) against a real JACK server with the dummy driver: no sound card, no mock.

Each test module starts its own ``jackd -d dummy -r 48000 -p 256`` under a unique name and stops it; the
stream workers find it through ``JACK_DEFAULT_SERVER``. Skipped with the reason when jackd2 or
sounddevice/libportaudio2 is missing (``scripts/setup.sh`` installs them as root).
``DYSTREAM_SOUND_CAPTURE_S`` lengthens the capture-drift test (default 20 s).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from dystream_ros.config import NS
from dystream_ros.sound.jack import JackServer, jack_available
from dystream_ros.sound.worker import Capture, Player


def _skip_reason() -> str | None:
    reason = jack_available()
    if reason:
        return reason
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as e:
        return f"sounddevice/PortAudio not importable: {e}"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
RATE = 48000


@pytest.fixture(scope="module")
def jack(tmp_path_factory):
    j = JackServer(rate=RATE, period=256, log=tmp_path_factory.mktemp("jack") / "jackd.log")
    j.start()
    yield j
    j.stop()


class Logs:
    def __init__(self):
        self.lines = []

    def __call__(self, level, msg):
        self.lines.append((level, msg))

    def has(self, level, part):
        return any(lv == level and part in m for lv, m in self.lines)


def _collect(cap: Capture, seconds: float) -> list:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        b = cap.read(0.1)
        if b is not None:
            out.append(b)
    return out


def test_capture_stamps_follow_the_sample_count(jack):
    seconds = float(os.environ.get("DYSTREAM_SOUND_CAPTURE_S", "20"))
    cap = Capture({"rate": RATE, "channels": 1, "block_ms": 20.0}, env=jack.env(), log=Logs())
    cap.start()
    try:
        assert cap.wait_open(20), cap.last_error
        xruns_before = jack.xruns()[0]
        blocks = _collect(cap, seconds)
        read_at = time.time_ns()
        xruns, flags = jack.xruns()[0] - xruns_before, int(cap.totals("overflow_flags"))
    finally:
        cap.stop()
    assert len(blocks) > seconds * 5  # capturing all along (50 blocks/s when the graph keeps its cycles)
    stamps = np.array([b.stamp_ns for b in blocks], dtype=np.int64)
    assert (np.diff(stamps) > 0).all(), "stamps must be monotonic"
    frames = np.array([b.data.shape[0] for b in blocks])
    lost = sum(b.lost_before for b in blocks[1:])
    first, last = blocks[0], blocks[-1]
    # every sample between the first and the last block is either delivered or counted as lost
    assert last.index - first.index == frames[:-1].sum() + lost
    # drift of the stamps against the sample count: the device clock against the system clock (the
    # stamps follow the capture time); reported, not asserted: JACK's dummy driver on a loaded VM
    # wanders by milliseconds, a sound card's crystal by its ppm
    drift_ms = (last.stamp_ns - first.stamp_ns - (last.index - first.index) * NS / RATE) / 1e6
    minutes = (last.stamp_ns - first.stamp_ns) / NS / 60
    dev = np.abs([b.stamp_ns - b.adc_ns for b in blocks]) / 1e6
    print(f"\ncapture {minutes * 60:.0f} s: {len(blocks)} blocks, lost {lost} samples, "
          f"drift {drift_ms:+.3f} ms ({drift_ms / minutes:+.3f} ms/min), |stamp - adc| median "
          f"{np.median(dev):.3f} p99 {np.percentile(dev, 99):.3f} ms; xruns: jackd {xruns}, flagged {flags}")
    # contiguous: each stamp is the previous one plus its block (+ lost samples), moved by the slew only
    step = np.diff(stamps) - (frames[:-1] + [b.lost_before for b in blocks[1:]]) * NS / RATE
    assert np.abs(step).max() <= 0.5e6 + 1
    # the stamp is the capture time: before the block could be read, and close to the ADC time
    assert stamps[-1] + frames[-1] * NS // RATE <= read_at
    if lost or xruns or flags:
        # a starved VM (seen in CI: 5685 samples lost, the dummy driver's clock 120 ms off its sample count
        # over 20 s) moves the mapped ADC time in jumps the stamps follow by the bounded slew only (asserted
        # above), so their distance from it is not judged; what was lost is counted (asserted above)
        print("capture: the run had counted xruns or losses; the stamps' distance from the ADC time is not "
              "judged on this machine now")
        return
    assert len(blocks) > seconds * 40
    assert np.median(dev) < 2.0


CLICK = 48  # samples of each loopback click
# A run whose time base drifted more than this against its sample count is not compared: JACK's dummy
# driver times its cycles with the system's sleep, which on a loaded VM can fall behind without a counted
# xrun, and each stream's clock mapping follows that on its own schedule. Measured here: at most 0.15 ms
# over a run, with both cores busy. (A run on another VM slid 2.1 ms over its eight clicks without an
# xrun; its drift was not recorded, which is what the print below is for.)
MAX_DRIFT_MS = 0.5


def _loopback(jack) -> dict:
    """Player -> JACK connection -> capture: 8 clicks scheduled ~100 ms apart, found in the stamped
    capture. Returns what was heard and scheduled, the player's records and what was counted meanwhile."""
    before = set(jack.ports())
    pl = Player({"channels": 1}, env=jack.env(), log=Logs())
    pl.start()
    assert pl.wait_open(20), pl.last_error
    out_port = next(p for p in set(jack.ports()) - before if ":out" in p)
    before = set(jack.ports())
    cap = Capture({"rate": RATE, "channels": 1, "block_ms": 10.0}, env=jack.env(), log=Logs())
    cap.start()
    try:
        assert cap.wait_open(20), cap.last_error
        in_port = next(p for p in set(jack.ports()) - before if ":in" in p)
        jack.connect(out_port, in_port)
        time.sleep(0.5)

        def counted():  # xruns logged by jackd, xruns flagged by PortAudio, samples lost by the capture
            return (*jack.xruns(), pl.totals("underflow_flags") + cap.totals("overflow_flags"),
                    cap.totals("lost_samples") + cap.totals("dropped_samples") + cap.dropped_samples)

        counted_before = counted()  # from here on: the clicks' run (opening and connecting may xrun)
        t0 = time.time_ns() + 400_000_000
        scheduled = t0 + np.array([int(k * 100_000_000 + k * 1_234_567) for k in range(8)])
        click = np.ones(CLICK, np.float32) * 0.8
        for t in scheduled:
            assert pl.schedule(click, int(t), int(t))
        blocks = _collect(cap, 1.8)
        # every click played or counted late, as the player's worker reports it (every 10 ms; later when
        # the machine starves it)
        played, deadline = [], time.monotonic() + 10
        while True:
            played += pl.take_played()
            if CLICK * len(played) + pl.totals("samples_late") >= CLICK * len(scheduled) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        out_latency_ms = pl.status["output_latency_ms"]
        xruns, slip_ms, flags, lost = (a - b for a, b in zip(counted(), counted_before, strict=True))
    finally:
        cap.stop()
        pl.stop()
    # the device's time base against the system clock over the run: the mapped ADC time of the last block
    # minus the first's, against the samples between them (0 for a device that keeps its rate)
    adc_drift_ms = ((blocks[-1].adc_ns - blocks[0].adc_ns)
                    - (blocks[-1].index - blocks[0].index) * NS / RATE) / 1e6
    x = np.concatenate([b.data[:, 0].astype(np.float32) / 32768 for b in blocks])
    times = np.concatenate([b.stamp_ns + np.arange(b.data.shape[0]) * NS / RATE for b in blocks])
    heard = times[np.flatnonzero((x[1:] > 0.4) & (x[:-1] <= 0.4)) + 1]
    match = np.abs(heard[:, None] - scheduled[None, :]).argmin(axis=1)  # nearest (they are 100 ms apart)
    # a click can be heard twice (split by a buffer of silence a missed cycle put in its middle): only a
    # run with counted xruns may do that, asserted by the caller
    return {"heard": heard, "scheduled": scheduled, "match": match, "clicks_heard": len(set(match.tolist())),
            "out_latency_ms": out_latency_ms,
            "played": played, "late": pl.totals("samples_late"), "xruns": xruns,
            "slip_ms": slip_ms, "flags": flags, "lost": lost, "adc_drift_ms": adc_drift_ms,
            "clean": xruns + flags + lost == 0 and abs(adc_drift_ms) <= MAX_DRIFT_MS}


def test_playback_is_heard_at_its_scheduled_time(jack):
    """Loopback inside JACK: the player's output port feeds the capture's input port; each click is
    found in the stamped capture and its capture time compared with its scheduled play time.

    A JACK connection hands the output buffer to the input within the graph cycle (or the next one),
    skipping the DAC -> air -> ADC path whose latency PortAudio's DAC time includes: the click is
    captured one output latency (DAC time - callback time, reported by the player), up to one JACK
    period more, before its scheduled time. What the test pins: the same offset for every click
    (placed to the sample by the player, seen through the capture's stamps) and that offset equal to
    the reported latency within a period.

    That holds for a run in which the JACK graph kept its cycles. On a loaded machine a cycle can be
    late or a client can miss one (jackd logs each xrun, PortAudio flags it): the time base both
    streams map then slips, each mapping follows on its own schedule, and a click in a missed cycle is
    not heard. The same holds for a run whose time base drifted against its sample count without an
    xrun (measured from the capture's mapped ADC times, bounded by ``MAX_DRIFT_MS``). Such a run is
    repeated (up to 5 runs); when none is clean, what is asserted is that every click was played or
    counted late, and every click not heard coincides with counted xruns."""
    runs = []
    for _ in range(5):
        r = _loopback(jack)
        runs.append(r)
        err = np.round((r["heard"] - r["scheduled"][r["match"]]) / 1e6, 3)
        print(f"\nloopback: heard - scheduled = {err} ms; output latency {r['out_latency_ms']:.3f} ms; "
              f"xruns: jackd {r['xruns']} (cycles late by"
              f" {r['slip_ms']:.3f} ms), flagged {r['flags']}; samples lost {r['lost']}; time base drift"
              f" {r['adc_drift_ms']:+.3f} ms")
        if r["clean"]:
            break
    for r in runs:  # every run: each click played (or counted late), each one not heard explained
        assert CLICK * len(r["played"]) + r["late"] >= CLICK * len(r["scheduled"]), r
        if r["clicks_heard"] < len(r["scheduled"]):
            assert r["xruns"] + r["flags"] + r["lost"] > 0, "a click neither heard nor lost to a counted xrun"
        if r["clicks_heard"] < len(r["heard"]):
            assert r["xruns"] + r["flags"] + r["lost"] > 0, f"two clicks heard for one: {r['heard']}"
        assert all(abs(p.played_ns - p.scheduled_ns) <= NS / RATE for p in r["played"])
    r = runs[-1]
    if not r["clean"]:
        print(f"loopback: all {len(runs)} runs had xruns or a drifting time base; placement not compared on "
              "this machine now")
        return
    assert len(r["heard"]) == r["clicks_heard"] == len(r["scheduled"]) == len(r["played"])
    err_ms = (r["heard"] - r["scheduled"][r["match"]]) / 1e6
    # the player placed each click to the sample (asserted above); the capture's stamps may move by the
    # stamper's slew (0.5 ms a block) towards their mapped ADC time: two clicks agree within two steps
    assert np.ptp(err_ms) < 1.0, (f"clicks spread {np.ptp(err_ms):.3f} ms: {np.round(err_ms, 3)}; "
                                  f"time base drift {r['adc_drift_ms']:+.3f} ms")
    resid = err_ms + r["out_latency_ms"]
    assert (resid <= 1.0).all() and (resid >= -256 / RATE * 1000 - 1.0).all()


def test_device_missing_at_start_then_lost_and_back(tmp_path):
    name = f"dystream-late-{os.getpid()}"
    logs = Logs()
    cap = Capture({"rate": RATE, "channels": 1, "block_ms": 20.0}, env={"JACK_DEFAULT_SERVER": name,
                                                                        "JACK_NO_START_SERVER": "1"},
                  log=logs, retry_s=0.3)
    cap.start()
    server = JackServer(name, rate=RATE, period=256, log=tmp_path / "jackd.log")
    try:
        deadline = time.monotonic() + 30
        while cap.open_failures < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cap.open_failures >= 2 and not cap.is_open
        assert "no input device" in cap.last_error
        assert logs.has("error", "no input device")  # said once, clearly
        server.start()
        assert cap.wait_open(30), cap.last_error  # found when the server appears
        assert cap.read(5.0) is not None
        server.stop()  # the device disappears under the open stream
        deadline = time.monotonic() + 30
        while cap.device_losses < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cap.device_losses == 1
        server.start()
        deadline = time.monotonic() + 30
        while cap.opens < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cap.opens == 2
        while cap.read(0) is not None:
            pass
        assert cap.read(5.0) is not None  # capturing again
    finally:
        cap.stop()
        server.stop()


def test_sample_rate_mismatch(jack):
    logs = Logs()
    strict = Capture({"rate": 16000, "channels": 1, "rate_fallback": False}, env=jack.env(), log=logs,
                     retry_s=0.3)
    strict.start()
    try:
        deadline = time.monotonic() + 30
        while strict.open_failures < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not strict.is_open
        assert "16000" in strict.last_error and "48000" in strict.last_error
    finally:
        strict.stop()
    logs = Logs()
    loose = Capture({"rate": 16000, "channels": 1, "rate_fallback": True}, env=jack.env(), log=logs)
    loose.start()
    try:
        assert loose.wait_open(20)
        assert loose.rate == RATE
        assert logs.has("warning", "default rate 48000")
        b = loose.read(5.0)
        assert b is not None and b.rate == RATE
    finally:
        loose.stop()


def test_overload_drops_are_counted_and_accounted(jack):
    """A consumer that stops reading: blocks the bounded queue cannot take are counted, and the sample
    index of the next block delivered shows exactly that many samples missing. Counted on both sides:
    this process's queue (``dropped_samples``) and, when the worker itself is starved on a loaded
    machine, the worker's queue (its ``status``); each delivered block carries the drops before it."""
    cap = Capture({"rate": RATE, "channels": 1, "block_ms": 10.0}, env=jack.env(), log=Logs(),
                  queue_blocks=5)
    cap.start()
    try:
        assert cap.wait_open(20)
        time.sleep(1.5)  # nobody reads
        blocks = _collect(cap, 1.0)
    finally:
        cap.stop()
    assert cap.dropped_blocks > 0
    frames = sum(b.data.shape[0] for b in blocks[:-1])
    lost = sum(b.lost_before for b in blocks[1:])
    dropped = sum(b.dropped_before for b in blocks[1:])
    gap = blocks[-1].index - blocks[0].index - frames - lost
    assert gap == dropped
    assert dropped == cap.dropped_samples + int(cap.totals("dropped_samples"))


def test_burst_longer_than_the_queue(jack):
    pl = Player({"channels": 2, "max_queued_s": 1.0}, env=jack.env(), log=Logs())
    pl.start()
    try:
        assert pl.wait_open(20)
        now = time.time_ns()
        assert pl.schedule(np.full(3 * RATE, 0.1, np.float32), now + 200_000_000, now)
        deadline = time.monotonic() + 10
        while pl.status.get("samples_overflow", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = pl.status
        assert st["samples_overflow"] == 2 * RATE
        assert st["samples_unaccounted"] == 0
        assert pl.is_open  # no crash
    finally:
        pl.stop()
