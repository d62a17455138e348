"""``dystream demo`` (``make demo``): the product working end to end over real ROS 2, with its latency.

1. Writes the bundled sample conversation (``dystream_ros/assets/sample/{speaker,listener}.wav``, or
   the WAVs / bag given) as a bag (``DIR/input_bag``, MCAP).
2. Starts three processes that talk over DDS (Fast DDS): ``dystream_node`` (the installed executable,
   ``--ros-args -r __ns:=/dystream --params-file config/default.yaml``, the embedded default model,
   or random weights with a loud warning while the default is not trained yet), ``dystream_recorder``
   and ``dystream_bag_player``, which starts once the node and the recorder subscribe and then plays
   the conversation in real time.
3. Stops when the recorder has the frame that covers the end of the audio, then turns the recording
   into ``DIR/video.mp4`` (25 fps, the conversation as its audio), ``DIR/report.json`` (DESIGN.md §6;
   the latency numbers are the node's own: ``processing_ms``/``av_offset_ms`` measured at publish),
   ``DIR/latency.png`` and ``DIR/lipsync.png``; ``DIR/output.mcap`` is the recording itself.

Nothing here imports rclpy: the ROS side runs in the child processes. ``ROS_DOMAIN_ID`` is kept when
set; otherwise a random domain is used (printed, so a viewer such as Foxglove can join).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dystream_ros.audio.resample import resample
from dystream_ros.config import FPS, NS, SAMPLE_RATE
from dystream_ros.eval import report
from dystream_ros.io import bags
from dystream_ros.io.images import image_msg_to_rgb
from dystream_ros.io.wav import read_wav_frames

NODE_NS = "/dystream"
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "assets" / "sample"


def _say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}", flush=True)


def _banner(lines: list[str]) -> None:
    bar = "!" * 78
    print(f"\033[1;31m{bar}", file=sys.stderr)
    for line in lines:
        print(f"!! {line}", file=sys.stderr)
    print(f"{bar}\033[0m", file=sys.stderr, flush=True)


def repo_root() -> Path | None:
    """The source checkout holding this package, if it is one (scripts/env.sh next to it)."""
    import dystream_ros

    for entry in dystream_ros.__path__:
        root = Path(entry).resolve().parent
        if (root / "scripts" / "env.sh").is_file() and (root / "package.xml").is_file():
            return root
    return None


def find_executable(name: str) -> Path | None:
    """``lib/dystream_ros/<name>`` of the install tree (AMENT_PREFIX_PATH, then the checkout's install/)."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    root = repo_root()
    if root is not None:
        prefixes.append(root / "install" / "dystream_ros")
    for prefix in prefixes:
        exe = prefix / "lib" / "dystream_ros" / name
        if exe.is_file():
            return exe
    return None


def choose_checkpoint(requested: str | None, profile: str = "lite") -> tuple[str | None, bool]:
    """(checkpoint for the node, True when falling back to random weights)."""
    if requested:
        return requested, requested == "random"
    from dystream_ros.runtime.session import default_checkpoint_path

    if default_checkpoint_path(profile).is_file():
        return None, False
    return "random", True


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict, wrap: Path | None):
        self.name, self.log_path = name, log
        self.cmd = cmd
        if wrap is not None:  # a source checkout: enter its environment (venv, ROS, install overlay)
            script = (f"source {shlex.quote(str(wrap / 'scripts' / 'env.sh'))} >/dev/null && "
                      f"export PYTHONPATH={shlex.quote(str(wrap))}${{PYTHONPATH:+:$PYTHONPATH}} && "
                      f'exec "$@"')
            cmd = ["bash", "-c", script, name, *cmd]
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self.log.close()
        return self.p.poll()


def _input_bag(args, out: Path) -> tuple[Path, float]:
    """The bag to play (made from WAVs unless --bag) and its audio duration in seconds."""
    if args.bag:
        bag = Path(args.bag)
    else:
        spk = Path(args.speaker or SAMPLE_DIR / "speaker.wav")
        lis = Path(args.listener or SAMPLE_DIR / "listener.wav")
        if args.seconds:
            spk = _trim(spk, out / "speaker.wav", args.seconds)
            lis = _trim(lis, out / "listener.wav", args.seconds)
        bag = bags.make_bag(spk, lis, out / "input_bag", chunk_ms=args.chunk_ms, storage="mcap",
                             overwrite=True)
    with bags.BagReader(bag) as r:
        speaker, listener = bags.pick_audio_topics(r.topics)
        audio = bags.read_audio(r, [t for t in (speaker, listener) if t])
    origin = min(p[0].stamp_ns for p in audio.values() if p)
    end = max(p[-1].stamp_ns - origin + len(p[-1].samples) * NS // p[-1].sample_rate
              for p in audio.values() if p)
    return bag, end / NS


def _trim(src: Path, dst: Path, seconds: float) -> Path:
    data, rate = read_wav_frames(src)
    from scipy.io import wavfile

    wavfile.write(dst, rate, data[: int(round(seconds * rate))])
    return dst


def run_demo(args) -> int:
    t_start = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = repo_root()

    # ---- set-up ----------------------------------------------------------------------------------------
    node_exe = find_executable("dystream_node")
    if node_exe is None and root is not None and not args.no_setup:
        _say("the ROS 2 build is missing: running make setup")
        subprocess.run(["bash", str(root / "scripts" / "setup.sh")], check=True)
        node_exe = find_executable("dystream_node")
    if node_exe is None:
        print("dystream demo: dystream_node is not installed (run `make setup`, or colcon build and source "
              "install/setup.bash)", file=sys.stderr)
        return 2
    player_exe, recorder_exe = find_executable("dystream_bag_player"), find_executable("dystream_recorder")
    if player_exe is None or recorder_exe is None:
        print("dystream demo: dystream_bag_player/dystream_recorder are not installed: run `make setup`",
              file=sys.stderr)
        return 2
    params_default = next(
        (c for c in bags.package_share_candidates("config/default.yaml") if c.is_file()), None)

    ckpt, random_weights = choose_checkpoint(args.checkpoint)
    if random_weights:
        _banner(["RANDOM WEIGHTS: the embedded default model (dystream_ros/assets/models/lite.safetensors)",
                 "is not there yet" if not args.checkpoint else "requested with --checkpoint random",
                 "The face will move, but not like a person: this demo measures the pipeline and its",
                 "latency, not the quality of the animation."])

    bag, audio_s = _input_bag(args, out)
    n_frames = int(np.ceil(audio_s * FPS - 1e-9))
    _say(f"conversation: {bag} ({audio_s:.1f} s, {n_frames} frames)")
    exes = (node_exe, player_exe, recorder_exe, params_default, root)
    node_params = [("checkpoint", ckpt)] if ckpt is not None else []
    if args.reference:
        node_params.append(("reference", str(Path(args.reference).resolve())))
    rc = _run_once(args, out, bag, audio_s, n_frames, exes, node_params, random_weights, t_start)
    if rc != 0 or args.no_photo:
        return rc
    photo_ckpt, why = photo_checkpoint(args.checkpoint, args.photo_checkpoint)
    if photo_ckpt is None:
        _say(f"photo avatar skipped: {why}")
        return 0
    from dystream_ros.photo import ASTRONAUT

    _say(f"the same conversation with the photo avatar ({ASTRONAUT.name}, renderer photo, {why})")
    photo_params = [("checkpoint", photo_ckpt), ("reference", str(ASTRONAUT)), ("renderer", "photo")]
    return _run_once(args, out / "photo", bag, audio_s, n_frames, exes, photo_params, False, time.monotonic())


def photo_checkpoint(requested: str | None, photo: str | None = None) -> tuple[str | None, str]:
    """(checkpoint for the photo avatar, why): ``photo`` when given, else the embedded articulation model,
    else the embedded latent model with its articulation read-out; None when neither is shipped (or
    another checkpoint was asked for the first run)."""
    from dystream_ros.model.articulation import readout_path
    from dystream_ros.runtime.session import default_checkpoint_path

    if photo:
        return str(Path(photo).resolve()), "--photo-checkpoint"
    if requested:
        return None, "--checkpoint given (the photo run uses the embedded models)"
    art = default_checkpoint_path("articulation")
    if art.is_file():
        return str(art), "the embedded articulation model"
    lite = default_checkpoint_path("lite")
    if lite.is_file() and readout_path(lite).is_file():
        return str(lite), "the embedded lite model's articulation read-out"
    return None, "no embedded model with an articulation output"


def _run_once(args, out: Path, bag: Path, audio_s: float, n_frames: int, exes: tuple, node_params: list,
              random_weights: bool, t_start: float) -> int:
    """One live run over DDS (node, recorder, player) into ``out``: recording, video, report, plots."""
    node_exe, player_exe, recorder_exe, params_default, root = exes
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ)
    if not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    py = sys.executable

    node_cmd = [py, str(node_exe), "--ros-args", "-r", f"__ns:={NODE_NS}"]
    if params_default is not None:
        node_cmd += ["--params-file", str(params_default)]
    # A deeper (reliable, keep-last) output history so that a recorder stalled for a moment by a busy
    # CPU still gets every frame: the recording measures the node, not the recorder.
    node_cmd += ["-p", "output_qos_depth:=50"]
    if args.params_file:
        node_cmd += ["--params-file", str(Path(args.params_file).resolve())]
    for name, value in node_params:
        node_cmd += ["-p", f"{name}:={value}"]
    if args.seed is not None:
        node_cmd += ["-p", f"seed:={int(args.seed)}"]
    rec_cmd = [py, str(recorder_exe), "--ros-args", "-p", f"out:={out / 'output.mcap'}",
               "-p", f"source:={NODE_NS}", "-p", "audio_reliable:=true",
               "-p", f"stop_after_frame:={n_frames - 1}", "-p", "stop_grace_s:=3.0"]
    with bags.BagReader(bag) as r:
        topics = bags.pick_audio_topics(r.topics)
    rec_cmd += ["-p", "audio_topics:=[" + ",".join(f"'{t}'" for t in topics if t) + "]"]
    player_cmd = [py, str(player_exe), str(bag), "--ros-args", "-p", "wait_for_subscribers:=2",
                  "-p", f"wait_timeout_s:={args.timeout}", "-p", "start_delay_s:=1.0"]

    wrap = root if root is not None and (root / "install").is_dir() else None
    _say(f"starting dystream_node, dystream_recorder, dystream_bag_player "
         f"(ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, logs in {logs})")
    procs: list[Proc] = []
    try:
        node = Proc("dystream_node", node_cmd, logs / "node.log", env, wrap)
        procs.append(node)
        recorder = Proc("dystream_recorder", rec_cmd, logs / "recorder.log", env, wrap)
        procs.append(recorder)
        player = Proc("dystream_bag_player", player_cmd, logs / "player.log", env, wrap)
        procs.append(player)
        deadline = time.monotonic() + args.timeout
        announced = False
        while player.alive():
            if not node.alive():
                raise RuntimeError(f"dystream_node exited ({node.p.poll()}):\n{node.tail()}")
            if not recorder.alive():
                if recorder.p.poll() == 0:
                    break  # it has every frame; the player is still draining its publishers (linger_s)
                raise RuntimeError(f"dystream_recorder exited ({recorder.p.poll()}):\n{recorder.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {args.timeout:.0f} s; node log:\n{node.tail()}")
            if not announced and "bag_player: playing" in player.tail(10):
                announced = True
                _say(f"node up after {time.monotonic() - t_start:.1f} s; playing the conversation in real "
                     f"time ({audio_s:.1f} s)...")
            time.sleep(0.2)
        try:
            player.p.wait(timeout=max(10.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"dystream_bag_player did not exit in time:\n{player.tail()}") from None
        if player.p.returncode != 0:
            raise RuntimeError(f"dystream_bag_player failed ({player.p.returncode}):\n{player.tail()}")
        _say("playback done; waiting for the last frames")
        try:
            recorder.p.wait(timeout=max(10.0, min(60.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            _say("the recorder did not see the last frame in time; stopping it")
    finally:
        for p in reversed(procs):
            p.stop()
    if not (out / "output.mcap").is_file():
        print(f"dystream demo: no recording was written; recorder log:\n{procs[1].tail()}", file=sys.stderr)
        return 1

    _say("writing video, report and plots")
    photo = ("renderer", "photo") in node_params
    rep = live_report(out, bag, n_frames, random_weights=random_weights,
                      reader="mediapipe" if photo else "synthetic")
    rep["demo_wall_s"] = round(time.monotonic() - t_start, 1)
    report.write_report(out / "report.json", rep)
    print(summary(rep, out))
    if random_weights:
        _banner(["These results come from RANDOM WEIGHTS (see above)."])
    return 0


# ---- the recording -> video, report, plots -----------------------------------------------------------


def bag_audio_16k(bag: str | Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(speaker, listener, origin stamp ns): the bag's conversation at 16 kHz on the stream timeline
    (sample 0 = the first stamp on either channel, as the node's frame 0)."""
    with bags.BagReader(bag) as r:
        speaker, listener = bags.pick_audio_topics(r.topics)
        audio = bags.read_audio(r, [t for t in (speaker, listener) if t])
    origin = min(p[0].stamp_ns for p in audio.values() if p)
    out = []
    for topic in (speaker, listener):
        if topic is None:
            out.append(None)
            continue
        parts = []
        for p in audio[topic]:
            x = resample(p.samples, p.sample_rate, SAMPLE_RATE)
            parts.append((int(round((p.stamp_ns - origin) * SAMPLE_RATE / NS)), x))
        n = max((s + len(x) for s, x in parts), default=0)
        track = np.zeros(n, np.float32)
        for s, x in parts:
            track[s : s + len(x)] = x
        out.append(track)
    return out[0], out[1], origin


def live_report(out: Path, input_bag: Path, n_frames: int, random_weights: bool = False,
                reader: str = "synthetic") -> dict:
    """Video, plots and report.json of a live recording (``out/output.mcap`` + its ``_frames.json``)."""
    from dystream_ros.io.video import VideoWriter

    stats = json.loads((out / "output_frames.json").read_text())
    frames = {int(f["index"]): f for f in stats["frames"] if "step_ms" in f}
    indices = sorted(i for i in frames if i < n_frames)
    stamps = {frames[i]["stamp_ns"]: i for i in indices}
    image_topic = stats["topics"]["image"]

    speaker, listener, _ = bag_audio_16k(input_bag)
    audio_len = max(len(speaker), len(listener) if listener is not None else 0)
    images: dict[int, np.ndarray] = {}
    with bags.BagReader(out / "output.mcap") as bag:
        for _, ty, t_ns, raw in bag.messages([image_topic]):
            if t_ns in stamps:
                images[stamps[t_ns]] = image_msg_to_rgb(bag.deserialize(raw, ty))
    # Frames the node skipped (or that were lost) hold the previous image, as a display would.
    vid = VideoWriter(out / "video.mp4", fps=FPS, sample_rate=SAMPLE_RATE) if images else None
    mouth = report.MouthTracker(reader) if images else None  # mediapipe for photographs
    last = None
    held = 0
    for i in range(n_frames if images else 0):
        img = images.get(i, last)
        if img is None:
            continue
        if i not in images:
            held += 1
        vid.add_frame(img)
        mouth.add(img)
        last = img
    speaker_track = np.zeros(audio_len, np.float32)
    speaker_track[: len(speaker)] = speaker
    listener_track = np.zeros(audio_len, np.float32)
    if listener is not None:
        listener_track[: len(listener)] = listener
    if vid is not None:
        vid.close(report.mix(speaker_track, listener_track))
    ls_entry, mouth_sig, env = report.lipsync_entry(
        mouth.readings() if mouth else None, speaker_track, listener_track if listener is not None else None,
        note=mouth.note if mouth else "the node published no images (render or publish_image off)")

    records = []
    e2e = []
    for i in indices:
        f = frames[i]
        records.append(report.FrameRecord(i, f["stamp_ns"], f["step_ms"], f["processing_ms"],
                                   f.get("av_offset_ms", float("nan")), f.get("state", 0),
                                   f.get("speaker_level_db", 0.0), f.get("listener_level_db", 0.0)))
        e2e.append((f["recv_ns"] - f["stamp_ns"]) / 1e6)
    info = stats.get("node_info") or {}
    skipped = max((frames[i].get("skipped_frames", 0) for i in indices), default=0)
    missing = [i for i in range(n_frames) if i not in frames]
    rep = report.build_report(
        records, fps=FPS, skipped=skipped, lipsync=ls_entry,
        backend=str(info.get("backend", "unknown"))
        + (f"/{info['precision']}" if info.get("precision") else ""),
        profile=stats.get("profile"), checkpoint=stats.get("checkpoint"), mode="live",
        latency_model=("measured by dystream_node over real DDS (DESIGN.md §3): processing_ms = publish - "
                       "arrival of the last audio sample the frame needed, av_offset_ms = publish - arrival "
                       "of the frame's first sample; step_ms = the node's compute per frame; "
                       "e2e_av_offset_ms = recorder receive time - the frame's audio-start stamp (player "
                       "stamps = capture time; includes DDS delivery and the recorder's own queueing)"),
        extra={
            "random_weights": random_weights,
            "frames_expected": n_frames, "missing_frames": len(missing),
            # neither received nor skipped by the node: lost between node and recorder
            "lost_frames": max(0, len(missing) - int(skipped)),
            "missing_frame_indices": missing[:50],
            "e2e_av_offset_ms": report.stats(e2e, ("p50", "p95", "p99")),
            "audio_duration_s": round(audio_len / SAMPLE_RATE, 3),
            "video_duration_s": round(vid.frames / FPS, 3) if vid else None,
            "held_frames": held + (vid.held_frames if vid else 0),
            "bag": str(input_bag), "node_info": info,
            "files": {n: str(out / n) for n in ("video.mp4", "output.mcap", "report.json", "latency.png",
                                                "lipsync.png", "output_frames.json", "logs")},
        })
    title = f"live over DDS ({rep['profile']}, {rep['checkpoint']}, {rep['backend']})"
    report.plot_latency(out / "latency.png", [r.step_ms for r in records], [r.processing_ms for r in records],
                        [r.av_offset_ms for r in records], title=title)
    report.plot_lipsync(out / "lipsync.png", mouth_sig, env, scores=ls_entry)
    report.write_report(out / "report.json", rep)
    return rep


def summary(rep: dict, out: Path) -> str:
    def q(d, keys=("p50", "p95", "p99", "max")):
        return "  ".join(f"{k} {d.get(k)}" for k in keys if k in d)

    ls = rep.get("lipsync") or {}
    lines = [
        "",
        f"dystream demo: {rep['frames']}/{rep.get('frames_expected')} frames at {rep['fps']} fps over DDS, "
        f"profile {rep['profile']}, checkpoint {rep['checkpoint']}"
        + ("  (RANDOM WEIGHTS)" if rep.get("random_weights") else "") + f", backend {rep['backend']}",
        f"  processing_ms  {q(rep['processing_ms'])}",
        f"  av_offset_ms   {q(rep['av_offset_ms'])}",
        f"  step_ms        {q(rep['step_ms'])}",
        f"  skipped_frames {rep['skipped_frames']}   lost in transport {rep.get('lost_frames')}",
        f"  lip sync       offset {ls.get('offset_frames')} frames, confidence {ls.get('confidence')}, "
        f"correlation {ls.get('correlation')}" + (f"  ({ls['note']})" if ls.get("note") else ""),
    ]
    if rep.get("demo_wall_s") is not None:
        lines.append(f"  wall time      {rep['demo_wall_s']} s")
    lines.append("  files:")
    for name in ("video.mp4", "output.mcap", "report.json", "latency.png", "lipsync.png"):
        if (out / name).exists():
            lines.append(f"    {out / name}")
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        return run_demo(args)
    except (RuntimeError, bags.BagError) as err:
        print(f"dystream demo failed: {err}", file=sys.stderr)
        return 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the node, a bag player and a recorder over real DDS on the sample conversation: video, "
                     "output bag, latency report",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--checkpoint", help="'random' or a weights file (default: the embedded default model, "
                   "random weights while it is missing)")
    p.add_argument("--speaker", help="speaker WAV (default: the bundled sample conversation)")
    p.add_argument("--listener", help="listener WAV (default: the bundled sample conversation)")
    p.add_argument("--bag", help="play this bag instead of the WAVs")
    p.add_argument("--seconds", type=float, help="use only the first SECONDS of the WAVs")
    p.add_argument("--chunk-ms", type=float, default=20.0, help="audio message duration of the bag made "
                   "from the WAVs (default 20)")
    p.add_argument("--reference", help="reference face image (default: the embedded avatar)")
    p.add_argument("--seed", type=int, help="noise seed (default: the node's, 0)")
    p.add_argument("--params-file", help="extra node parameter YAML (after config/default.yaml)")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the node to come up "
                   "and the playback to finish (default 240)")
    p.add_argument("--no-setup", action="store_true", help="never run make setup")
    p.add_argument("--no-photo", action="store_true", help="skip the second run with the photo avatar "
                   "(DIR/photo/)")
    p.add_argument("--photo-checkpoint", help="checkpoint of the photo run (needs an articulation output; "
                   "default: the embedded articulation model, else the lite model's read-out)")
    p.set_defaults(func=_cmd_demo)
