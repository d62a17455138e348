"""``dystream replay BAG --out DIR``: offline, deterministic replay of a recorded conversation.

The bag's audio is fed, message by message in bag (arrival) order, to the node's own frame scheduler
(:class:`dystream_ros.runtime.scheduler.FrameScheduler`) on a simulated clock that advances in 40 ms
ticks of bag time, exactly as the node's timer would: the scheduler decides which frames are due
(audio up to the frame's end plus the lookahead on both channels, or a channel's wait expired; the
catch-up limit; skips) and hands over the audio; the model session steps one frame per due frame.
Everything that decides *what* is computed depends only on the bag, so the same bag, checkpoint and
seed always give identical latents (the model draws its noise from (seed, frame index)).

Latency in the report (``latency_model`` says so too):

* ``step_ms`` — measured wall time of ``Session.step()`` per frame on this machine (compute only).
* ``processing_ms`` / ``av_offset_ms`` — *simulated real-time arrival*: each message arrives at its
  bag time; the timer ticks every 40 ms of bag time (phase: half a frame after the first message, the
  average case of a timer's arbitrary phase); frames due at a tick are computed one after the
  other, each taking its measured ``step_ms``, so a frame is "published" at
  ``max(tick, previous publish) + step_ms``. ``processing_ms`` = publish − arrival of the last sample
  the frame needed (or the tick at which a channel's wait expired); ``av_offset_ms`` = publish −
  arrival of the frame's first sample (DESIGN.md §3). Compute time feeds only these numbers, never
  the schedule, so an overrun shows up as latency here but never as a skip (``skipped_frames`` are
  the scheduler's skips, driven by the bag's timing alone). A live run over DDS (``dystream demo``)
  measures the real thing.

Outputs in DIR: ``output.mcap`` (``/dystream/face_image``, ``/dystream/motion_latent``,
``/dystream/state`` and a copy of the input audio topics; bag time = header stamp = audio time; one
MCAP file with its message definitions), ``video.mp4`` (H.264 yuv420p 25 fps + AAC of speaker and
listener mixed), ``report.json``, ``latency.png``, ``lipsync.png``, ``latents.npy`` (float32
[frames, latent_dim], frame order).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dystream_ros.audio import AudioFormatError
from dystream_ros.audio.messages import raw_audio
from dystream_ros.config import NS, stamp_to_ns
from dystream_ros.eval import report
from dystream_ros.io import bags
from dystream_ros.runtime.intake import Notice

OUTPUT_NS = "/dystream"


@dataclass
class _Event:
    log_ns: int
    seq: int
    topic: str
    channel: str
    msg: object  # the deserialized message
    info: object  # audio_common: the stream's latest AudioInfo at this message (None if none yet)
    raw: bytes
    msgtype: str


class Timeline:
    """The audio handed to the model, per channel, on the stream timeline (sample 0 = frame 0 start)."""

    def __init__(self):
        self.parts: dict[str, list[tuple[int, np.ndarray]]] = {"speaker": [], "listener": []}

    def add(self, start: int, speaker: np.ndarray, listener: np.ndarray) -> None:
        self.parts["speaker"].append((start, np.asarray(speaker, np.float32)))
        self.parts["listener"].append((start, np.asarray(listener, np.float32)))

    def get(self, channel: str, length: int) -> np.ndarray:
        out = np.zeros(max(0, length), np.float32)
        for start, x in self.parts[channel]:
            end = min(length, start + len(x))
            if end > start >= 0:
                out[start:end] = x[: end - start]
        return out


def _log(level: str, msg: str) -> None:
    print(f"{level}: {msg}", file=sys.stderr)


def _read_events(bag: bags.BagReader, speaker: str, listener: str | None) -> list[_Event]:
    """The audio messages of both topics in bag (arrival) order, each with its stream's AudioInfo."""
    topics = [speaker] + ([listener] if listener else [])
    info_topics = bags.info_topics_of(bag.topics, topics)
    infos: dict[str, object] = {}
    events = []
    for seq, (topic, msgtype, t_ns, raw) in enumerate(bag.messages(set(topics) | set(info_topics.values()))):
        msg = bag.deserialize(raw, msgtype)
        if msgtype == bags.AUDIO_INFO:
            infos[topic] = msg
            continue
        channel = "speaker" if topic == speaker else "listener"
        events.append(_Event(t_ns, seq, topic, channel, msg, infos.get(info_topics.get(topic, "")), raw,
                             msgtype))
    events.sort(key=lambda e: (e.log_ns, e.seq))
    return events


def replay(bag_path: str | Path, out_dir: str | Path, *, speaker_topic: str | None = None,
           listener_topic: str | None = None, checkpoint: str | None = None, profile: str | None = None,
           reference: str | Path | None = None, seed: int | None = None, device: str | None = None,
           params_file: str | Path | None = None, progress: bool = True, video: bool = True,
           lipsync: bool = True, pipe=None, tick_phase_ms: float = 20.0, renderer: str | None = None) -> dict:
    """Replay ``bag_path`` offline into ``out_dir``; returns the report (also written to report.json).

    Settings not given here come from the node's parameters (``config/default.yaml``, overlaid with
    ``params_file``): checkpoint, profile, reference, seed, device, steps, temperature, guidance, the
    scheduler's.
    """
    from dystream_ros.runtime.engine import AvatarEngine
    from dystream_ros.runtime.intake import AudioIntake
    from dystream_ros.runtime.settings import load_settings
    from dystream_ros.runtime.stats import StreamStats, Throttle

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with bags.BagReader(bag_path) as bag:
        speaker, listener = bags.pick_audio_topics(bag.topics, speaker_topic, listener_topic)
        storage = bag.storage
        events = _read_events(bag, speaker, listener)
    if not events:
        raise bags.BagError(f"{bag_path}: no audio messages on {speaker} / {listener}")

    settings = load_settings(params_file, checkpoint=checkpoint, profile=profile, seed=seed, device=device,
                             reference=str(reference) if reference else None, render=video or lipsync,
                             renderer=renderer)
    engine = AvatarEngine(settings, pipe=pipe, log=_log)
    stats = StreamStats()
    intake = AudioIntake(settings, stats)  # the node's own per-message limits, decoding and counters
    throttle = Throttle(5.0)
    pipe, sched = engine.pipe, engine.scheduler
    seed = settings.seed
    frame_ns = sched.config.frame_ns
    spf = sched.config.samples_per_frame

    writer = bags.BagWriter(out / "output.mcap", overwrite=True)
    img_topic, lat_topic, state_topic = (f"{OUTPUT_NS}/face_image", f"{OUTPUT_NS}/motion_latent",
                                         f"{OUTPUT_NS}/state")
    writer.add_topic(img_topic, bags.IMAGE)
    writer.add_topic(lat_topic, bags.MOTION_LATENT)
    writer.add_topic(state_topic, bags.AVATAR_STATE)
    for t, ty in {e.topic: e.msgtype for e in events}.items():
        writer.add_topic(t, ty)  # reliable, as the node's inputs expect when the bag is played

    vid = None
    if video:
        from dystream_ros.io.video import VideoWriter

        vid = VideoWriter(out / "video.mp4", fps=int(pipe.fps), sample_rate=int(pipe.sample_rate))
    mouth = report.MouthTracker() if lipsync else None
    timeline = Timeline()
    records: list[report.FrameRecord] = []
    latents: list[np.ndarray] = []
    resets = 0
    state_cls = bags.typestore().types[bags.AVATAR_STATE]

    bar = None
    if progress:
        from tqdm import tqdm

        dur = (events[-1].log_ns - events[0].log_ns) / NS
        bar = tqdm(total=int(round(dur * pipe.fps)) or None, unit="frame", desc="replay", file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)

    last_publish = -np.inf

    def run_tick(tick_ns: int, n_target: int | None) -> bool:
        """One timer tick at bag time ``tick_ns``; False once frame ``n_target`` would be passed."""
        nonlocal last_publish, resets
        wall = tick_ns / NS
        plan = engine.tick(tick_ns, wall=wall)
        resets += bool(plan.reset_reason)
        if n_target is not None:
            plan.frames = [j for j in plan.frames if j.index < n_target]
        if not plan.idle and (plan.speaker.size or plan.listener.size):
            timeline.add(plan.audio_start, plan.speaker, plan.listener)
        publish = max(wall, last_publish)
        for fo in engine.frames(plan):
            job, frame = fo.job, fo.frame
            publish += fo.step_ms / 1e3
            proc, avo = fo.latency_ms(publish)
            rec = report.FrameRecord(job.index, job.stamp_ns, fo.step_ms, proc, avo, fo.state,
                                     job.speaker_level_db, job.listener_level_db, dict(frame.timings))
            records.append(rec)
            lat = np.asarray(frame.latent, dtype=np.float32).reshape(-1)
            latents.append(lat)
            writer.write(lat_topic, job.stamp_ns, bags.latent_msg(
                job.stamp_ns, job.index, lat, pipe.profile, pipe.checkpoint_id, fo.model_ms, proc))
            writer.write(state_topic, job.stamp_ns, state_cls(
                header=bags.header(job.stamp_ns), state=fo.state, frame_index=job.index,
                processing_ms=proc, av_offset_ms=avo if np.isfinite(avo) else 0.0,
                skipped_frames=fo.session_skipped, speaker_level_db=job.speaker_level_db,
                listener_level_db=job.listener_level_db))
            if frame.image is not None:
                writer.write(img_topic, job.stamp_ns, bags.image_msg(job.stamp_ns, frame.image))
                if vid is not None:
                    vid.add_frame(frame.image)
                if mouth is not None:
                    mouth.add(frame.image)
            if bar is not None:
                bar.update(1)
        last_publish = publish
        return n_target is None or sched.next_frame < n_target

    # The timer ticks every 40 ms of bag time, ``tick_phase_ms`` after the first message's arrival
    # (a node's timer has an arbitrary phase against the audio; half a frame is the average case);
    # audio that arrives at or after a tick's time is pushed after that tick.
    tick = events[0].log_ns + int(round(tick_phase_ms * 1e6))
    for ev in events:
        while tick <= ev.log_ns:
            run_tick(tick, None)
            tick += frame_ns
        _push(ev, engine, intake, stats, throttle)
        writer.write_raw(ev.topic, stamp_to_ns(ev.msg.header.stamp) or ev.log_ns, ev.raw)
    # After the bag: the channels' waits expire and the last frames (lookahead = silence) come out.
    # Stop once the frames cover the audio (the node itself would go on producing silent frames).
    n_target = -(-max(ch.high_water for ch in sched.channels.values()) // spf)
    limit = tick + 60 * NS  # the waits are fractions of a second; this only guards a misconfiguration
    while sched.next_frame < n_target and tick < limit:
        if not run_tick(tick, n_target):
            break
        tick += frame_ns
    if bar is not None:
        bar.close()
    writer.close()

    # ---- audio track, video, lip sync, plots, report -------------------------------------------------
    audio_len = max(ch.high_water for ch in sched.channels.values())
    speaker_audio = timeline.get("speaker", audio_len)
    listener_audio = timeline.get("listener", audio_len)
    if vid is not None:
        vid.close(report.mix(speaker_audio, listener_audio) if vid.frames else None)
    lat_arr = np.stack(latents) if latents else np.zeros((0, int(getattr(pipe, "latent_dim", 0))), np.float32)
    np.save(out / "latents.npy", lat_arr)

    readings = mouth.readings() if mouth is not None else None
    ls_entry, mouth_sig, env = report.lipsync_entry(
        readings, speaker_audio, listener_audio if listener else None, fps=int(pipe.fps),
        note=(mouth.note if mouth is not None else "lip sync not requested"))
    wall_s = time.perf_counter() - t_start
    audio_s = audio_len / pipe.sample_rate
    rep = report.build_report(
        records, fps=int(pipe.fps), skipped=sched.stats.skipped_frames, lipsync=ls_entry, pipe=pipe,
        mode="offline",
        latency_model=("simulated real-time arrival: messages arrive at their bag time, 40 ms timer ticks in "
                       f"bag time ({tick_phase_ms:g} ms after the first message), frames computed "
                       "sequentially with their measured step_ms; step_ms = measured compute of "
                       "Session.step() on this machine"),
        extra={
            "bag": str(bag_path), "storage": storage, "speaker_topic": speaker, "listener_topic": listener,
            "seed": seed, "audio_duration_s": round(audio_s, 3),
            "video_duration_s": round((vid.frames if vid else len(records)) / pipe.fps, 3),
            "held_frames": vid.held_frames if vid else 0, "stream_resets": resets,
            "replay_wall_s": round(wall_s, 2),
            "realtime_factor": round(audio_s / wall_s, 2) if wall_s > 0 else None,
            "scheduler": {k: getattr(sched.stats, k) for k in ("frames", "skipped_frames", "streams",
                                                                "restamped_messages", "silence_samples")},
            "input_messages": {"received": sum(stats.received.values()), "accepted": dict(stats.accepted),
                               "bad": dict(stats.bad_messages)},
        })
    title = f"offline replay of {Path(bag_path).name} ({pipe.profile}, {rep['checkpoint']})"
    report.plot_latency(out / "latency.png", [r.step_ms for r in records],
                        [r.processing_ms for r in records], [r.av_offset_ms for r in records], title=title)
    report.plot_lipsync(out / "lipsync.png", mouth_sig, env, fps=int(pipe.fps), scores=ls_entry)
    rep["files"] = {n: str(out / n) for n in ("output.mcap", "video.mp4", "report.json", "latency.png",
                                              "lipsync.png", "latents.npy") if n != "video.mp4" or vid}
    report.write_report(out / "report.json", rep)
    return rep


def _push(ev: _Event, engine, intake, stats, throttle) -> None:
    """One bag message into the engine as the node takes it: the same codec, limits and counters."""
    stats.received[ev.channel] += 1
    try:
        raw = raw_audio(ev.msg, ev.msgtype, ev.info)
    except AudioFormatError as e:
        stats.bad_messages[e.kind] += 1
        notes = [Notice(f"bad:{e.kind}:{ev.channel}", "warning", f"{ev.topic}: {e}; message dropped")]
    else:
        notes, _ = intake.take(engine, ev.channel, raw.data, raw.encoding, raw.channels, raw.sample_rate,
                               raw.stamp_ns, arrival=ev.log_ns / NS, now_ns=ev.log_ns)
    for n in notes:
        held = throttle(n.key)
        if held is not None and n.level != "info":
            _log("warning", n.text + (f" ({held} similar message(s) suppressed)" if held else ""))


# ---- CLI -------------------------------------------------------------------------------------------


def _cmd_replay(args: argparse.Namespace) -> int:
    try:
        rep = replay(args.bag, args.out, speaker_topic=args.speaker_topic,
                     listener_topic=args.listener_topic, checkpoint=args.checkpoint, profile=args.profile,
                     reference=args.reference, seed=args.seed, device=args.device,
                     params_file=args.params_file, progress=not args.no_progress, video=not args.no_video,
                     renderer=args.renderer)
    except bags.BagError as err:
        print(f"dystream replay: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"dystream replay: {err}\n(no embedded default weights yet? use --checkpoint random)",
              file=sys.stderr)
        return 2
    print(summary(rep, Path(args.out)))
    return 0


def summary(rep: dict, out: Path) -> str:
    ls = rep.get("lipsync") or {}
    lines = [
        f"{rep['mode']} replay: {rep['frames']} frames at {rep['fps']} fps, profile {rep['profile']}, "
        f"checkpoint {rep['checkpoint']}, backend {rep['backend']}",
        f"  step_ms       p50 {rep['step_ms']['p50']}  p95 {rep['step_ms']['p95']}  "
        f"p99 {rep['step_ms']['p99']}  max {rep['step_ms']['max']}",
        f"  processing_ms p50 {rep['processing_ms']['p50']}  p95 {rep['processing_ms']['p95']}  "
        f"p99 {rep['processing_ms']['p99']}  max {rep['processing_ms']['max']}",
        f"  av_offset_ms  p50 {rep['av_offset_ms']['p50']}  p95 {rep['av_offset_ms']['p95']}  "
        f"p99 {rep['av_offset_ms']['p99']}",
        f"  skipped_frames {rep['skipped_frames']}   lipsync offset {ls.get('offset_frames')} frames, "
        f"confidence {ls.get('confidence')}, correlation {ls.get('correlation')}",
    ]
    if rep.get("realtime_factor") is not None:
        lines.append(f"  replay took {rep['replay_wall_s']} s ({rep['realtime_factor']}x real time)")
    for name in ("video.mp4", "output.mcap", "report.json", "latency.png", "lipsync.png"):
        if (out / name).exists():
            lines.append(f"  {out / name}")
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "replay", help="offline, deterministic replay of a rosbag2 conversation (video, output bag, report)",
        description=__doc__.split("\n\n")[0] + " Reads rosbag2 sqlite3 and MCAP (rosbags); audio as "
        "dystream_ros/AudioChunk or audio_common_msgs/AudioDataStamped (+AudioInfo).")
    p.epilog = ("Latency in report.json: step_ms is the measured compute per frame on this machine; "
                "processing_ms and av_offset_ms are simulated real time (messages arrive at their bag "
                "time, a 40 ms timer in bag time, frames computed one after another with their measured "
                "step_ms); compute never changes which frames are produced, so latents are deterministic. "
                "`dystream demo` measures the live node over DDS. output.mcap is one MCAP file: "
                "`ros2 bag play DIR/output.mcap` (Humble: add -s mcap) or open it in Foxglove.")
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or MCAP) or a .mcap file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--speaker-topic", help="the avatar's own speech (default: the audio topic named like "
                   "'speaker'/'tts')")
    p.add_argument("--listener-topic", help="the other party (default: the audio topic named like "
                   "'listener'/'mic')")
    p.add_argument("--checkpoint", help="weights file, or 'random' (default: the embedded default model)")
    p.add_argument("--profile", help="model profile (default: the node's, lite)")
    p.add_argument("--reference", help="reference face image (default: the embedded avatar)")
    p.add_argument("--renderer", choices=("learned", "photo", "auto"),
                   help="how images are drawn (default: the node's, auto: photo for a photograph)")
    p.add_argument("--seed", type=int, help="noise seed (default: the node's, 0)")
    p.add_argument("--device", help="cpu | cuda (default: the node's)")
    p.add_argument("--params-file", help="node parameter YAML (as given to dystream_node) whose settings "
                   "the replay uses: checkpoint, steps, temperature, guidance, catch_up_limit, waits, ...; "
                   "default: "
                   "the package's config/default.yaml")
    p.add_argument("--no-video", action="store_true", help="skip rendering and video.mp4")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_replay)
