"""``dystream train evaluate``: stream held-out conversations through a checkpoint and measure them.

Each conversation (held-out voices and identities from ``dystream synth --split heldout``) is driven
through the real streaming :class:`~dystream_ros.runtime.session.Session` (``load_pipeline`` with the
checkpoint, started from the conversation's reference image), and the rendered frames are read by the
independent mouth reader (:mod:`dystream_ros.eval.lipsync`, trained only on ground-truth renders):

- mouth opening vs the ground-truth articulation (``jaw_open * (1 - lip_close)``): correlation at the
  best offset in +-15 frames, that offset (positive = video lags) and the SyncNet-style confidence;
- mouth vs the speaker's audio envelope (the number a real clip without ground truth would get);
- head motion (read pitch) while listening to the other party vs in silence (ratio).

With ``--ground-truth`` the same measurements are made on the ground-truth renders (the reader's
ceiling). Writes ``OUT/eval.json`` and an image grid ``OUT/frames.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["evaluate_articulation", "evaluate_checkpoint", "model_readout", "mouth_without_reader",
           "stream_frames", "stream_latents"]


def stream_frames(
    pipe, speaker: np.ndarray, listener: np.ndarray, reference: np.ndarray, num_frames: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, S, S, 3) and latents (T, D) of the first ``num_frames`` frames the streaming engine
    makes of the conversation (the node's scheduler and session, :meth:`AvatarEngine.offline`)."""
    from dystream_ros.runtime.engine import AvatarEngine, model_sampler
    from dystream_ros.runtime.settings import Settings

    settings = Settings(seed=seed, warmup_frames=0, num_threads=0, **model_sampler(pipe))
    engine = AvatarEngine(settings, pipe=pipe, reference=reference)
    frames, lats = [], []
    for out in engine.offline(speaker, listener):
        if len(frames) == num_frames:
            break
        frames.append(out.frame.image)
        lats.append(out.frame.latent)
    if len(frames) < num_frames:
        raise RuntimeError(f"the stream gave {len(frames)} frames, fewer than the conversation's "
                           f"{num_frames}")
    return np.stack(frames), np.stack(lats)


def _summary(results: list[dict]) -> dict[str, Any]:
    def col(path):
        vals = []
        for r in results:
            v = r
            for k in path:
                v = None if v is None else v.get(k)
            vals.append(np.nan if v is None else float(v))
        return np.array(vals, np.float64)

    out: dict[str, Any] = {}
    for name, path in {
        "gt_mouth_correlation_best": ("gt", "mouth", "correlation"),
        "gt_mouth_offset": ("gt", "mouth", "offset_frames"),
        "gt_mouth_confidence": ("gt", "mouth", "confidence"),
        "gt_mouth_correlation_at_zero": ("gt", "mouth_correlation"),
        "audio_correlation": ("correlation",),
        "audio_offset": ("offset_frames",),
        "audio_confidence": ("confidence",),
        "listen_vs_silence": ("listener", "listen_vs_silence"),
        "motion_listening": ("listener", "motion", "other"),
        "motion_silence": ("listener", "motion", "silence"),
        "motion_speaking": ("listener", "motion", "self"),
        "mouth_listening": ("listener", "mouth", "other"),
        "mouth_speaking": ("listener", "mouth", "self"),
    }.items():
        v = col(path)
        out[name] = {
            "mean": float(np.nanmean(v)),
            "median": float(np.nanmedian(v)),
            "min": float(np.nanmin(v)),
            "max": float(np.nanmax(v)),
        }
    return out


def _pooled(readings: list[dict], convs: list[dict]) -> dict[str, Any]:
    """Sync scores over all conversations concatenated (mouth vs ground truth)."""
    from dystream_ros.eval.lipsync import gt_columns, gt_mouth, listener_behaviour, sync_scores

    mouth = np.concatenate([r["mouth"] for r in readings])
    gt = np.concatenate([gt_mouth(gt_columns(c["params"])) for c in convs])
    s = sync_scores(mouth, gt)
    pitch = np.concatenate([r["pitch"] for r in readings])
    spk = np.concatenate([c["speaker"] for c in convs])
    lis = np.concatenate([c["listener"] for c in convs])
    lb = listener_behaviour(pitch, spk, lis)
    return {
        "gt_mouth": {k: s[k] for k in ("offset_frames", "correlation", "confidence", "correlation_at_zero")},
        "listen_vs_silence": lb["listen_vs_silence"],
        "motion": lb["motion"],
        "frames": lb["frames"],
    }


def _grid(rows: list[np.ndarray], labels: list[str], path: Path, cell: int = 128) -> None:
    import cv2

    tiles = []
    for row, label in zip(rows, labels, strict=True):
        imgs = [cv2.resize(f, (cell, cell), interpolation=cv2.INTER_AREA) for f in row]
        strip = np.concatenate(imgs, axis=1)
        bar = np.full((18, strip.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([bar, strip], axis=0))
    from PIL import Image

    Image.fromarray(np.concatenate(tiles, axis=0)).save(path)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    conversations: int = 10,
    seed: int = 0,
    ground_truth: bool = True,
    backend: str = "auto",
    max_frames: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    from tqdm import tqdm

    from dystream_ros.data.dataset import iter_dataset
    from dystream_ros.eval.lipsync import evaluate, load_reader
    from dystream_ros.runtime.session import load_pipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(checkpoint=checkpoint, backend=backend)
    reader = load_reader("synthetic")
    size = pipe.image_size
    per, per_gt, reads, reads_gt, convs = [], [], [], [], []
    grid_rows, grid_labels = [], []
    t0 = time.time()
    step_s = 0.0
    n_frames = 0
    it = iter_dataset(data)
    for i in tqdm(range(conversations), desc="evaluate", unit="conv", disable=not progress):
        conv = next(it, None)
        if conv is None:
            break
        T = conv.num_frames if max_frames is None else min(conv.num_frames, max_frames)
        spk, lis = conv.speaker[: T * 640], conv.listener[: T * 640]
        params = conv.params[:T]
        ref = conv.reference_image(size)
        ts = time.time()
        frames, _ = stream_frames(pipe, spk, lis, ref, T, seed=seed)
        step_s += time.time() - ts
        n_frames += T
        rd = reader.read(frames)
        res = evaluate(frames, spk, lis, params, readings=rd, reader=reader)
        res["name"] = conv.name
        per.append(res)
        reads.append({"mouth": np.asarray(rd["mouth"]), "pitch": np.asarray(rd["pitch"])})
        convs.append({"params": params, "speaker": spk, "listener": lis})
        gt_frames = None
        if ground_truth:
            gt_frames = np.stack(list(conv.iter_frames(size)))[:T]
            rg = reader.read(gt_frames)
            rgt = evaluate(gt_frames, spk, lis, params, readings=rg, reader=reader)
            rgt["name"] = conv.name
            per_gt.append(rgt)
            reads_gt.append({"mouth": np.asarray(rg["mouth"]), "pitch": np.asarray(rg["pitch"])})
        if i < 2:
            idx = np.linspace(10, T - 10, 8).astype(int)
            if gt_frames is not None:
                grid_rows.append(gt_frames[idx])
                grid_labels.append(f"{conv.name} ground truth (frames {idx[0]}..{idx[-1]})")
            grid_rows.append(frames[idx])
            grid_labels.append(f"{conv.name} generated by the streaming session from the reference")
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "checkpoint_id": pipe.checkpoint_id,
        "backend": pipe.backend_name,
        "data": str(data),
        "conversations": len(per),
        "frames": n_frames,
        "seed": seed,
        "stream_ms_per_frame": 1000.0 * step_s / max(n_frames, 1),
        "summary": _summary(per),
        "pooled": _pooled(reads, convs),
        "per_conversation": per,
    }
    if ground_truth:
        result["ground_truth_renders"] = {"summary": _summary(per_gt), "pooled": _pooled(reads_gt, convs)}
    result["wall_s"] = time.time() - t0
    from dystream_ros.eval.lipsync import jsonable

    result = jsonable(result)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    if grid_rows:
        _grid(grid_rows, grid_labels, out / "frames.png")
    return result


def stream_latents(pipe, speaker: np.ndarray, listener: np.ndarray, reference: np.ndarray, num_frames: int,
                   seed: int = 0) -> np.ndarray:
    """Latents (T, D) of the first ``num_frames`` frames a :class:`Session` of ``pipe`` makes of the
    conversation (all audio pushed at once plus silent lookahead; a session's output does not depend
    on how the audio arrives, so this equals the streamed frames)."""
    a = pipe.config.audio
    n = num_frames * a.samples_per_frame + a.lookahead_samples
    pad = [np.zeros(n, np.float32) for _ in range(2)]
    for buf, x in zip(pad, (speaker, listener), strict=True):
        x = np.asarray(x, np.float32)[:n]
        buf[: len(x)] = x
    sess = pipe.start_session(reference, seed=seed)
    sess.push_audio(speaker=pad[0], listener=pad[1])
    out = []
    for _ in range(num_frames):
        fr = sess.step()
        if fr is None:
            raise RuntimeError(f"the session gave {len(out)} frames, fewer than {num_frames}")
        out.append(fr.latent)
    return np.stack(out)


def model_readout(pipe, checkpoint: str | Path | None, readout: str | Path | None = None):
    """The latent -> articulation map of a loaded pipeline: an articulation model's own
    de-standardisation, else the read-out side file (``readout``, default next to the checkpoint)."""
    from dystream_ros.model.articulation import Readout, load_readout, readout_path
    from dystream_ros.runtime.session import default_checkpoint_path

    if pipe.config.motion == "articulation":
        return Readout.of_model(pipe.model)
    if readout is None:
        ck = Path(checkpoint) if checkpoint is not None else default_checkpoint_path(pipe.profile)
        readout = readout_path(ck)
    return load_readout(readout, pipe.latent_dim)


def articulation_listener(arts: list[np.ndarray], gts: list[np.ndarray], convs: list[dict]) -> dict[str, Any]:
    """Head motion by conversational state measured on the head pitch of the articulation itself, not
    read from frames: ``listen_vs_silence`` and ``motion`` (as :func:`~dystream_ros.eval.lipsync.
    listener_behaviour`, pooled over the conversations) of the generated and of the ground-truth
    ``head_pitch``. The read pitch of the headline figure also carries the reader's response to the
    other columns; this one is what a neck servo driven by ``FaceArticulation`` would do."""
    from dystream_ros.data.face import ARTICULATION_FIELDS
    from dystream_ros.eval.lipsync import listener_behaviour

    col = ARTICULATION_FIELDS.index("head_pitch")
    spk = np.concatenate([c["speaker"] for c in convs])
    lis = np.concatenate([c["listener"] for c in convs])
    out = {}
    for name, seqs in (("generated", arts), ("ground_truth", gts)):
        lb = listener_behaviour(np.concatenate([x[:, col] for x in seqs]), spk, lis)
        out[name] = {"listen_vs_silence": lb["listen_vs_silence"], "motion": lb["motion"]}
    return out


def mouth_without_reader(arts: list[np.ndarray], gts: list[np.ndarray],
                         read_mouths: list[np.ndarray]) -> dict[str, Any]:
    """The headline mouth figure split at the renderer: per conversation, the band-passed best-offset
    correlation (:func:`~dystream_ros.eval.lipsync.sync_scores`) of the generated visible opening
    ``jaw_open * (1 - lip_close)`` against the ground truth's (``articulation``: the model alone, no
    reader), and of the reader's opening against the generated one (``reader``: how faithfully the reader
    follows what was rendered). With independent errors the headline is about their product, so a
    headline target needs ``articulation`` above ``target / reader``. Means over the conversations
    (None where a clip is too short for the band-pass)."""
    from dystream_ros.eval.lipsync import gt_columns, gt_mouth, sync_scores

    def mean(v):
        v = [x for x in v if x is not None and np.isfinite(x)]
        return float(np.mean(v)) if v else None

    art, rdr = [], []
    for a, g, m in zip(arts, gts, read_mouths, strict=True):
        gen = gt_mouth(gt_columns(np.asarray(a, np.float64)))
        art.append(sync_scores(gen, gt_mouth(gt_columns(np.asarray(g, np.float64))))["correlation"])
        rdr.append(sync_scores(np.asarray(m, np.float64), gen)["correlation"])
    return {"articulation": mean(art), "reader": mean(rdr),
            "per_conversation": [{"articulation": x, "reader": y} for x, y in zip(art, rdr, strict=True)]}


def evaluate_articulation(
    checkpoint: str | Path | None,
    data: str | Path,
    out: str | Path,
    conversations: int = 10,
    seed: int = 0,
    readout: str | Path | None = None,
    backend: str = "auto",
    max_frames: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a model through the articulation renderer: stream each held-out conversation through a
    latents-only session, map the latents to articulation (:func:`model_readout`: an articulation
    model's own standardisation, or a latent model's linear read-out), clip to ``PARAM_RANGES``, render
    with the procedural face renderer (the conversation's identity) and read the frames with the same
    independent mouth reader as :func:`evaluate_checkpoint`. Also scores the articulation itself
    against the ground truth (per-field correlation, pooled frames). Writes ``OUT/eval.json`` and
    ``OUT/frames.png``."""
    from tqdm import tqdm

    from dystream_ros.data.dataset import iter_dataset
    from dystream_ros.data.face import ARTICULATION_FIELDS, clip_params, render_params
    from dystream_ros.eval.lipsync import evaluate, jsonable, load_reader
    from dystream_ros.runtime.session import load_pipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(checkpoint=checkpoint, backend=backend, render=False)
    ro = model_readout(pipe, checkpoint, readout)
    reader = load_reader("synthetic")
    size = pipe.image_size
    per, reads, convs, arts, gts = [], [], [], [], []
    grid_rows, grid_labels = [], []
    t0 = time.time()
    step_s, n_frames = 0.0, 0
    it = iter_dataset(data)
    for i in tqdm(range(conversations), desc="evaluate (articulation)", unit="conv", disable=not progress):
        conv = next(it, None)
        if conv is None:
            break
        T = conv.num_frames if max_frames is None else min(conv.num_frames, max_frames)
        spk, lis = conv.speaker[: T * 640], conv.listener[: T * 640]
        params = conv.params[:T]
        ts = time.time()
        lat = stream_latents(pipe, spk, lis, conv.reference_image(size), T, seed=seed)
        step_s += time.time() - ts
        n_frames += T
        art = clip_params(ro(lat))
        frames = np.stack(list(render_params(conv.identity, art, size)))
        rd = reader.read(frames)
        res = evaluate(frames, spk, lis, params, readings=rd, reader=reader)
        res["name"] = conv.name
        per.append(res)
        reads.append({"mouth": np.asarray(rd["mouth"]), "pitch": np.asarray(rd["pitch"])})
        convs.append({"params": params, "speaker": spk, "listener": lis})
        arts.append(art)
        gts.append(params)
        if i < 2:
            idx = np.linspace(10, T - 10, 8).astype(int)
            grid_rows.append(np.stack(list(render_params(conv.identity, params[idx], size))))
            grid_labels.append(f"{conv.name} ground truth (frames {idx[0]}..{idx[-1]})")
            grid_rows.append(frames[idx])
            grid_labels.append(f"{conv.name} generated articulation, rendered")
    a, g = np.concatenate(arts).astype(np.float64), np.concatenate(gts).astype(np.float64)
    fields = {}
    for j, name in enumerate(ARTICULATION_FIELDS):
        ok = a[:, j].std() > 0 and g[:, j].std() > 0
        fields[name] = {
            "r": float(np.corrcoef(a[:, j], g[:, j])[0, 1]) if ok else None,
            "std_generated": float(a[:, j].std()),
            "std_ground_truth": float(g[:, j].std()),
        }
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "checkpoint_id": pipe.checkpoint_id,
        "motion": pipe.config.motion,
        "readout": "model" if pipe.config.motion == "articulation" else str(readout or "side file"),
        "renderer": "data.face (procedural), articulation clipped to PARAM_RANGES",
        "backend": pipe.backend_name,
        "data": str(data),
        "conversations": len(per),
        "frames": n_frames,
        "seed": seed,
        "stream_ms_per_frame": 1000.0 * step_s / max(n_frames, 1),
        "summary": _summary(per),
        "pooled": _pooled(reads, convs),
        "articulation_vs_ground_truth": fields,
        "articulation_listener": articulation_listener(arts, gts, convs),
        "mouth_without_reader": mouth_without_reader(arts, gts, [x["mouth"] for x in reads]),
        "per_conversation": per,
    }
    result["wall_s"] = time.time() - t0
    result = jsonable(result)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    if grid_rows:
        _grid(grid_rows, grid_labels, out / "frames.png")
    return result


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="held-out conversations (dystream synth --split heldout)")
    p.add_argument("--checkpoint", default=None, help="pipeline checkpoint (default: the embedded model)")
    p.add_argument("--out", required=True, help="output directory (eval.json, frames.png)")
    p.add_argument("--conversations", type=int, default=10)
    p.add_argument("--max-frames", type=int, default=None, help="evaluate only the first N frames of each")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="evaluate with N sampler seeds (SEED .. SEED+N-1), each into OUT/seed_K/, and write their "
        "headline figures with the mean to OUT/seeds.json (the listening ratio moves with the seed)",
    )
    p.add_argument("--backend", default="auto")
    p.add_argument("--no-ground-truth", action="store_true", help="skip the ground-truth-render reference")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--articulation",
        action="store_true",
        help="evaluate through the articulation renderer (automatic for an articulation model; a latent "
        "model goes through its linear read-out)",
    )
    p.add_argument("--readout", default=None, help="read-out side file (default: next to the checkpoint)")


#: The headline figures :func:`evaluate_seeds` collects from each seed's eval.json: name -> path of keys.
HEADLINES = {
    "mouth_correlation_mean": ("summary", "gt_mouth_correlation_best", "mean"),
    "mouth_correlation_pooled": ("pooled", "gt_mouth", "correlation"),
    "mouth_offset_min": ("summary", "gt_mouth_offset", "min"),
    "mouth_offset_max": ("summary", "gt_mouth_offset", "max"),
    "listen_vs_silence_pooled": ("pooled", "listen_vs_silence"),
    "listen_vs_silence_mean": ("summary", "listen_vs_silence", "mean"),
    "listen_vs_silence_articulation": ("articulation_listener", "generated", "listen_vs_silence"),
    "mouth_articulation_mean": ("mouth_without_reader", "articulation"),
    "mouth_reader_mean": ("mouth_without_reader", "reader"),
}


def _evaluate_one(args, ck, out: Path, seed: int, ground_truth: bool) -> dict[str, Any]:
    from dystream_ros.model.checkpoint import read_config

    if args.articulation or read_config(ck).motion == "articulation":
        return evaluate_articulation(args.checkpoint, args.data, out, args.conversations, seed,
                                     args.readout, args.backend, args.max_frames)
    return evaluate_checkpoint(args.checkpoint, args.data, out, args.conversations, seed, ground_truth,
                               args.backend, args.max_frames)


def evaluate_seeds(results: dict[int, dict[str, Any]], out: Path) -> dict[str, Any]:
    """The :data:`HEADLINES` of each seed's result and their mean, min and max; written to
    ``out/seeds.json``."""
    def get(r, path):
        for k in path:
            r = None if r is None else r.get(k)
        return r

    per = {str(sd): {name: get(r, path) for name, path in HEADLINES.items()} for sd, r in results.items()}
    stats = {}
    for name in HEADLINES:
        v = [x[name] for x in per.values() if x[name] is not None]
        stats[name] = None if not v else {"mean": float(np.mean(v)), "min": float(np.min(v)),
                                          "max": float(np.max(v))}
    report = {"seeds": [int(s) for s in results], "per_seed": per, "over_seeds": stats}
    (out / "seeds.json").write_text(json.dumps(report, indent=1))
    return report


def evaluate_main(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from dystream_ros.runtime.session import default_checkpoint_path

    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {args.seeds}")
    ck = args.checkpoint if args.checkpoint is not None else default_checkpoint_path("lite")
    out = Path(args.out)
    if args.seeds == 1:
        r = _evaluate_one(args, ck, out, args.seed, not args.no_ground_truth)
    else:
        runs = {}
        for k in range(args.seeds):  # the ground-truth renders do not depend on the seed: once
            sd = args.seed + k
            runs[sd] = _evaluate_one(args, ck, out / f"seed_{sd}", sd, not args.no_ground_truth and k == 0)
        o = evaluate_seeds(runs, out)["over_seeds"]

        def span(x, spec):
            return "n/a" if x is None else f"{x['mean']:{spec}} ({x['min']:{spec}}-{x['max']:{spec}})"

        print(f"over {args.seeds} seeds: mouth correlation {span(o['mouth_correlation_mean'], '.3f')}, "
              f"listening / silence {span(o['listen_vs_silence_pooled'], '.2f')} (pooled) "
              f"-> {out / 'seeds.json'}")
        r, out = runs[args.seed], out / f"seed_{args.seed}"  # the first seed's figures below
    s, p = r["summary"], r["pooled"]

    def f(x, spec=".3f"):
        return "n/a" if x is None else format(x, spec)

    print(
        f"{r['conversations']} conversations, {r['frames']} frames "
        f"({f(r['stream_ms_per_frame'], '.1f')} ms/frame)"
    )
    print(
        f"mouth vs ground truth: correlation {f(s['gt_mouth_correlation_best']['mean'])} at offset "
        f"{f(s['gt_mouth_offset']['median'], '+.0f')} (mean / median of conversations), confidence "
        f"{f(s['gt_mouth_confidence']['mean'])}; pooled {f(p['gt_mouth']['correlation'])} at "
        f"{f(p['gt_mouth']['offset_frames'], '+d')}"
    )
    print(f"head motion listening / silence: {f(p['listen_vs_silence'], '.2f')} (pooled)")
    if "articulation_listener" in r:
        a = {k: f(v["listen_vs_silence"], ".2f") for k, v in r["articulation_listener"].items()}
        print(f"... of the articulation's head pitch (no reader): {a['generated']} "
              f"(ground truth {a['ground_truth']})")
    if "mouth_without_reader" in r:
        w = r["mouth_without_reader"]
        print(f"mouth, split at the renderer: generated vs ground-truth articulation {f(w['articulation'])}, "
              f"reader vs the generated articulation {f(w['reader'])} (means of conversations)")
    if "ground_truth_renders" in r:
        g = r["ground_truth_renders"]["pooled"]
        print(
            f"ground-truth renders: correlation {f(g['gt_mouth']['correlation'])} at "
            f"{f(g['gt_mouth']['offset_frames'], '+d')}, listening/silence {f(g['listen_vs_silence'], '.2f')}"
        )
    print(f"-> {out / 'eval.json'}")
    return 0
