#!/usr/bin/env python3
"""Measure the photo renderer (dystream_ros.photo) the way issue 15 asks; prints one JSON report.

For each photo (the shipped astronaut, Grace Hopper from matplotlib's bundled sample data, and any
``--photo``):

- **lip-sync**: the ground-truth articulation tracks of held-out synthetic conversations
  (``generate_conversation`` with ``conversation_seed(seed, "heldout", i)``, as ``dystream synth --split
  heldout`` makes them) are rendered through the photo rig (every field: jaw, lips, blinks, brows, head pose,
  gaze), and MediaPipe FaceMesh (``dystream_ros.eval.mouth_reader``, an independent reader) reads the mouth
  opening from the frames. Reported: Pearson r of the read opening against ground-truth ``jaw_open`` and
  against the visible opening ``jaw_open * (1 - lip_close)``, at offset 0 and the best of offsets -1..1
  (``eval.lipsync.sync_scores``, unfiltered), per conversation and pooled.
- **identity region**: PSNR of the eye / brow / nose box (brow tops to the nose base) against the reference
  over frames where only the mouth moves (the conversations' jaw, spread, round, closure; pose, blinks, brows,
  gaze and smile held at 0); the minimum over frames.
- **jaw sweep**: read opening at jaw_open 0, 0.1, ... 1 (Spearman rho, monotonic or not) and with
  lip_close = 1 at jaw 0.3 / 0.6 / 1 (closure should bring it to about 0).
- **timing**: render ms at 256 and 512 (median over frames, median of 3 runs, one thread) and build ms of a
  rebuild after the first (FaceMesh graph start excluded), median of 5.

    OMP_NUM_THREADS=1 python scripts/photo_eval.py --conversations 10 --duration 20 --out /tmp/photo_eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _load_photo(path: str) -> np.ndarray:
    from dystream_ros.io.images import load_image_file

    return load_image_file(path)


def default_photos() -> dict[str, str]:
    from dystream_ros.photo import ASTRONAUT

    photos = {"astronaut": str(ASTRONAUT)}
    try:
        from matplotlib import cbook

        photos["grace_hopper"] = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:  # matplotlib without its sample data
        pass
    return photos


def heldout_tracks(n: int, duration_s: float, seed: int) -> list[np.ndarray]:
    from tqdm import tqdm

    from dystream_ros.data.conversation import generate_conversation
    from dystream_ros.data.synth import conversation_seed

    return [generate_conversation(conversation_seed(seed, "heldout", i), split="heldout",
                                  duration_s=duration_s).params
            for i in tqdm(range(n), desc="held-out conversations", file=sys.stderr)]


def identity_box(rig) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the eyes, brows and nose in the reference frame (nose base = landmark 2)."""
    from dystream_ros.photo import facemesh as fm

    P = rig.landmarks[:, :2]
    idx = list(fm.BROW_A + fm.BROW_B + fm.EYE_A_UPPER + fm.EYE_A_LOWER + fm.EYE_B_UPPER + fm.EYE_B_LOWER)
    x0, y0 = P[idx].min(axis=0)
    x1, _ = P[idx].max(axis=0)
    y1 = P[2, 1]  # base of the nose, above the upper lip
    return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.floor(y1))


def _db(x) -> float | str:
    return round(float(x), 2) if np.isfinite(x) else "inf (identical)"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def evaluate_photo(name, image, tracks, reader, sizes=(256, 512)) -> dict:
    from dystream_ros.data.face import ARTICULATION_FIELDS
    from dystream_ros.eval.lipsync import sync_scores
    from dystream_ros.photo import build_rig

    F = {f: i for i, f in enumerate(ARTICULATION_FIELDS)}
    out: dict = {"photo": name}
    rig = build_rig(image, 256)
    out["build"] = {"face_px": round(rig.info.face_px, 1), "notes": rig.info.notes,
                    "yaw_deg": round(rig.info.yaw_deg, 1), "pitch_deg": round(rig.info.pitch_deg, 1)}
    # Lip-sync on the conversations.
    per, all_m, all_j, all_v = [], [], [], []
    for tr in tracks:
        frames = np.stack([rig.render(a) for a in tr])
        m = reader.read(frames)["mouth"].astype(np.float64)
        jaw = tr[:, F["jaw_open"]].astype(np.float64)
        vis = jaw * (1 - tr[:, F["lip_close"]])
        sj = sync_scores(m, jaw, 1, band=None)
        sv = sync_scores(m, vis, 1, band=None)
        per.append({"frames": len(tr), "face_found": float(np.isfinite(m).mean()),
                    "r_jaw_0": round(sj["correlation_at_zero"], 4), "r_jaw_best": round(sj["correlation"], 4),
                    "offset_jaw": sj["offset_frames"], "r_visible_0": round(sv["correlation_at_zero"], 4),
                    "r_visible_best": round(sv["correlation"], 4)})
        all_m.append(m)
        all_j.append(jaw)
        all_v.append(vis)
    m, j, v = np.concatenate(all_m), np.concatenate(all_j), np.concatenate(all_v)
    ok = np.isfinite(m)
    out["lipsync"] = {
        "conversations": per,
        "pooled_r_jaw": round(float(np.corrcoef(m[ok], j[ok])[0, 1]), 4),
        "pooled_r_visible": round(float(np.corrcoef(m[ok], v[ok])[0, 1]), 4),
        "mean_r_jaw_best": round(float(np.mean([p["r_jaw_best"] for p in per])), 4),
        "mean_r_jaw_0": round(float(np.mean([p["r_jaw_0"] for p in per])), 4),
        "min_r_jaw_best": round(float(np.min([p["r_jaw_best"] for p in per])), 4),
        "face_found": round(float(ok.mean()), 4),
    }
    # Identity region while only the mouth moves.
    x0, y0, x1, y1 = identity_box(rig)
    ref = rig.reference[y0:y1, x0:x1]
    vals = []
    mouth_only = [F[f] for f in ("jaw_open", "lip_spread", "lip_round", "lip_close")]
    for tr in tracks:
        for a in tr[::2]:
            b = np.zeros_like(a)
            b[mouth_only] = a[mouth_only]
            vals.append(psnr(rig.render(b)[y0:y1, x0:x1], ref))
    vals = np.array(vals)
    out["identity_region"] = {"box": [x0, y0, x1, y1], "frames": len(vals),
                              "min_psnr_db": _db(vals.min()), "median_psnr_db": _db(np.median(vals)),
                              "identical_frames": int(np.isinf(vals).sum())}
    # Jaw sweep and closure.
    jaws = np.linspace(0, 1, 11)
    sweep = []
    for jv in jaws:
        a = np.zeros(len(F), np.float32)
        a[F["jaw_open"]] = jv
        sweep.append(rig.render(a))
    read = reader.read(np.stack(sweep))["mouth"]
    from scipy.stats import spearmanr

    closed = []
    for jv in (0.3, 0.6, 1.0):
        a = np.zeros(len(F), np.float32)
        a[F["jaw_open"]] = jv
        a[F["lip_close"]] = 1.0
        closed.append(rig.render(a))
    read_closed = reader.read(np.stack(closed))["mouth"]
    out["jaw_sweep"] = {"jaw": [round(float(x), 2) for x in jaws],
                        "opening": [round(float(x), 4) for x in read],
                        "spearman": round(float(spearmanr(jaws, read, nan_policy="omit")[0]), 4),
                        "monotonic": bool(np.all(np.diff(read) >= -1e-3)),
                        "closed_jaw_0.3_0.6_1": [round(float(x), 4) for x in read_closed],
                        "reference_opening": round(float(read[0]), 4)}
    # Timing.
    timing = {}
    track = np.concatenate(tracks)[:250]
    for size in sizes:
        r = build_rig(image, size)
        runs, cpu_runs = [], []
        for _ in range(3):
            ts, cs = [], []
            for a in track:
                t, c = time.perf_counter(), time.thread_time()
                r.render(a)
                ts.append(time.perf_counter() - t)
                cs.append(time.thread_time() - c)
            runs.append(float(np.median(ts)) * 1e3)
            cpu_runs.append(float(np.median(cs)) * 1e3)
        # Wall-clock on a shared machine includes waiting for a core; the thread's CPU time is the cost on
        # one core.
        timing[f"render_ms_{size}"] = round(float(np.median(runs)), 2)
        timing[f"render_ms_{size}_runs"] = [round(x, 2) for x in runs]
        timing[f"render_ms_{size}_p99"] = round(float(np.percentile(ts, 99)) * 1e3, 2)
        timing[f"render_cpu_ms_{size}"] = round(float(np.median(cpu_runs)), 2)
        timing[f"render_cpu_ms_{size}_runs"] = [round(x, 2) for x in cpu_runs]
    builds, cpu_builds = [], []
    for _ in range(5):
        t, c = time.perf_counter(), time.thread_time()
        build_rig(image, 256)
        builds.append((time.perf_counter() - t) * 1e3)
        cpu_builds.append((time.thread_time() - c) * 1e3)  # FaceMesh's own threads are not counted here
    timing["build_ms_256"] = round(float(np.median(builds)), 1)
    timing["build_cpu_ms_256_this_thread"] = round(float(np.median(cpu_builds)), 1)
    timing["load_average_1min"] = round(os.getloadavg()[0], 2)
    out["timing"] = timing
    return out


def write_frames(path: Path, photos: dict[str, str], size: int = 256) -> None:
    import cv2

    from dystream_ros.data.face import ARTICULATION_FIELDS
    from dystream_ros.photo import build_rig

    sample = Path(__file__).resolve().parents[1] / "dystream_ros" / "assets" / "sample"
    params = np.load(sample / "params.npy")
    F = {f: i for i, f in enumerate(ARTICULATION_FIELDS)}
    vis = params[:, F["jaw_open"]] * (1 - params[:, F["lip_close"]])
    picks = [int(np.argmin(vis + 0.5 * params[:, F["blink_l"]])), int(np.argmax(vis)),
             int(np.argmax(params[:, F["blink_l"]] + params[:, F["blink_r"]]))]
    rows = []
    for _name, p in photos.items():
        rig = build_rig(_load_photo(p), size)
        rows.append(np.concatenate([rig.reference] + [rig.render(params[i]) for i in picks], axis=1))
    grid = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path}: reference + frames {picks} of the sample conversation, rows {list(photos)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conversations", type=int, default=10)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per conversation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photo", action="append", default=[], help="NAME=PATH of a further photo (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    ap.add_argument("--frames", type=Path, default=None,
                    help="only write a picture of three frames per photo (the shipped sample conversation's "
                         "articulation: mouth closed, mouth widest open, a blink) to this PNG and exit")
    args = ap.parse_args(argv)
    if args.frames:
        write_frames(args.frames, {**default_photos(), **dict(s.partition("=")[::2] for s in args.photo)})
        return 0
    import torch

    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    from dystream_ros.eval.mouth_reader import MouthReader

    photos = default_photos()
    for spec in args.photo:
        name, _, path = spec.partition("=")
        photos[name if path else Path(name).stem] = path or name
    tracks = heldout_tracks(args.conversations, args.duration, args.seed)
    reader = MouthReader.load("mediapipe")
    import platform

    machine = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})"
    report = {"machine": machine, "conversations": args.conversations, "duration_s": args.duration,
              "seed": args.seed, "photos": []}
    for name, path in photos.items():
        print(f"evaluating {name} ({path})", file=sys.stderr)
        report["photos"].append(evaluate_photo(name, _load_photo(path), tracks, reader))
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
