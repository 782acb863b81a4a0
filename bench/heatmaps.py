"""Heatmap latency and localisation.

    python bench/heatmaps.py [--run runs/demo] [--img-size 224] [--repeats 5] [--threads N]
                             [--device cuda] [--native] [--max-per-set N] [--skip-per-set N]
                             [--skip-latency]

Prints, measured in this one run on this machine:
  (a) latency of one heatmap (warm), ResNet-18 at --img-size px, for each kind — target ≤ 0.5 s
      for the class heatmap at 224 px on CPU.
  (b) when the run exists and its samples.csv has a ``mask`` column (near-OOD samples with an
      inserted artefact): the share of positive relevance inside the artefact mask, averaged
      over those samples, for the OOD heatmap, the OOD heatmap without the envelope gate (to
      show what the gate does), the distance-share variant, the class heatmap (LRP,
      predicted class) and plain Gradient×Input of the predicted class; plus the pointing
      game (is the most relevant pixel inside the mask?) and the mask's area (= chance).
  (c) with --native: (b) again for a ResNet-18 trained the demo's way at the images' own
      128 px instead of 64 px (built once into runs/.heatmaps-native/).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nero.data.preprocess import DEFAULT_IMG_SIZE
from nero.explain.attribution import HeatmapRequest, compute_heatmap, compute_heatmaps
from nero.explain.envelope import Envelope, EnvelopeRecorder
from nero.explain.rules import PLAIN_GRADIENT_X_INPUT
from nero.model.classifier import build_model, find_head
from nero.run.checkpoint import run_preprocessing
from nero.run.directory import read_run
from nero.run.heatmaps import (
    distance_contributions,
    load_run_model,
    ood_deviation,
    run_envelope,
    sample_image,
)

MAPS = ("ood", "ood, no gate", "distance", "class", "gradient×input")


def _synchronised(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def latency(img_size: int, repeats: int, device: torch.device) -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", 3, img_size).eval()
    _, head = find_head(model, img_size)
    # As the product keeps a run's model for heatmaps (nero.run.heatmaps.load_run_model).
    model.to(device, memory_format=torch.channels_last)
    x = torch.randn(1, 3, img_size, img_size)
    deviation = np.random.default_rng(0).normal(0, 0.01, head.in_features)
    envelope = stand_in_envelope(model, torch.randn(3, 3, img_size, img_size, device=device))
    both = [HeatmapRequest("class"), HeatmapRequest("ood", 0, deviation)]
    cases = {
        "class (LRP)": dict(kind="class"),
        "nero (LRP)": dict(kind="nero"),
        "ood (LRP, envelope gate)": dict(
            kind="ood", target=0, deviation=deviation, envelope=envelope
        ),
        "distance (LRP, 2 rows)": dict(kind="distance", target=0, deviation=deviation),
        "gradient×input": dict(kind="class", rules=PLAIN_GRADIENT_X_INPUT),
        "class + ood in one pass": dict(requests=both, envelope=envelope),
    }
    with torch.no_grad():
        model(x.to(device))
    start = _synchronised(device)
    for _ in range(repeats):
        with torch.no_grad():
            model(x.to(device))
    forward = (_synchronised(device) - start) / repeats
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"(a) latency, ResNet-18 at {img_size} px, {where}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"plain forward {forward * 1000:.1f} ms"
    )
    for name, kwargs in cases.items():
        compute = compute_heatmaps if "requests" in kwargs else compute_heatmap
        compute(model, head, x, "resnet18", **kwargs)  # warm-up
        times = []
        for _ in range(repeats):
            t = _synchronised(device)
            compute(model, head, x, "resnet18", **kwargs)
            times.append(_synchronised(device) - t)
        med, best = statistics.median(times) * 1000, min(times) * 1000
        print(f"    {name:<24} median {med:7.1f} ms   best {best:7.1f} ms")


def stand_in_envelope(model: torch.nn.Module, images: torch.Tensor) -> Envelope:
    """Envelope whose class c is image c alone (latency does not depend on its values)."""
    with torch.no_grad(), EnvelopeRecorder(model, len(images)) as recorder:
        model(images)
        recorder.update(np.arange(len(images)))
    return recorder.result()


def positive_share(relevance: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive relevance inside the mask; a map with none scores 0 (a miss)."""
    positive = np.clip(relevance, 0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else 0.0


def localisation(run_dir: Path, max_per_set: int | None, skip_per_set: int = 0) -> None:
    run = read_run(run_dir)
    if "mask" not in run.samples.columns:
        print(f"(b) {run_dir}/samples.csv has no mask column: nothing to localise")
        return
    near = run.samples[run.samples["mask"].astype(str) != ""]
    if skip_per_set:  # e.g. the images the gate points were chosen on
        near = near[near.groupby("split").cumcount() >= skip_per_set]
    if max_per_set is not None:
        near = near.groupby("split", group_keys=False).head(max_per_set)
    loaded = load_run_model(run)
    arch = run.manifest["model"]["arch"]
    size = run.manifest["img_size"]
    transform = run_preprocessing(run)
    start = time.perf_counter()
    envelope = run_envelope(run)
    print(
        f"(b) training envelope: {time.perf_counter() - start:.1f} s (fitted once per run, "
        f"then read from RUN/heatmaps/){'' if envelope else ' — none for this model'}"
    )
    rows: list[dict] = []
    start = time.perf_counter()
    for index, split, mask_path in zip(near["index"], near["split"], near["mask"], strict=True):
        index = int(index)
        prepared = transform.prepare(sample_image(run, index))
        x = transform.normalise(prepared).unsqueeze(0)
        width, height = prepared.geometry.original_size
        with Image.open(mask_path) as m:  # on the original grid, where the maps are compared
            mask = np.asarray(m.convert("L").resize((width, height), Image.NEAREST)) > 127
        deviation, centroid_class = ood_deviation(run, index)
        shares, _ = distance_contributions(run, index)
        ood = HeatmapRequest("ood", centroid_class, deviation)
        gated, distance, cls = compute_heatmaps(
            loaded.model,
            loaded.head,
            x,
            arch,
            [ood, HeatmapRequest("distance", centroid_class, shares), HeatmapRequest("class")],
            envelope=envelope,
        )
        (plain,) = compute_heatmaps(loaded.model, loaded.head, x, arch, [ood])
        maps = {
            "ood": gated,
            "ood, no gate": plain,
            "distance": distance,
            "class": cls,
            "gradient×input": compute_heatmap(
                loaded.model, loaded.head, x, arch, "class", rules=PLAIN_GRADIENT_X_INPUT
            ),
        }
        row = {"split": split, "area": float(mask.mean())}
        for name, heat in maps.items():
            rel = heat.located(prepared).original(long_side=None)
            row[f"{name}:share"] = positive_share(rel, mask)
            row[f"{name}:point"] = float(mask.flat[int(np.argmax(rel))])
            row[f"{name}:abs"] = float(np.abs(rel)[mask].sum() / max(np.abs(rel).sum(), 1e-30))
        rows.append(row)
    elapsed = time.perf_counter() - start
    print(
        f"(b) localisation on {run_dir} ({arch}, {size} px): {len(rows)} near-OOD samples with "
        f"masks, {elapsed:.0f} s. Share of positive relevance inside the artefact mask "
        "(pointing-game hit rate; share of |R|); a map without positive relevance counts 0:"
    )
    groups = sorted({r["split"] for r in rows}) + ["all"]
    header = f"    {'set':<16}{'n':>4}{'mask area':>11}" + "".join(f"{m:>26}" for m in MAPS)
    print(header)
    for group in groups:
        sel = [r for r in rows if group == "all" or r["split"] == group]
        cells = [
            f"{np.nanmean([r[m + ':share'] for r in sel]):.3f} "
            f"({np.mean([r[m + ':point'] for r in sel]):.2f}; "
            f"{np.mean([r[m + ':abs'] for r in sel]):.3f})"
            for m in MAPS
        ]
        name = group.removeprefix("ood:")
        area = np.mean([r["area"] for r in sel])
        print(f"    {name:<16}{len(sel):>4}{area:>11.3f}" + "".join(f"{c:>26}" for c in cells))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", type=Path, default=Path("runs/demo"))
    p.add_argument("--img-size", type=int, default=DEFAULT_IMG_SIZE)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-per-set", type=int, help="near-OOD samples per OOD set (default: all)")
    p.add_argument(
        "--skip-per-set",
        type=int,
        default=0,
        help="leave out the first N near-OOD images of each set (the gate points of "
        "nero.explain.envelope were chosen on the first 20: --skip-per-set 20 reports the rest)",
    )
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument(
        "--native",
        action="store_true",
        help="also localise with a ResNet-18 trained at the demo images' own 128 px (built "
        "once into runs/.heatmaps-native/, ~4 min on 2 cores; needs the demo data)",
    )
    p.add_argument("--device", default="cpu", help="device for the latency part (e.g. cuda)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_latency:
        latency(args.img_size, args.repeats, torch.device(args.device))
    if (args.run / "manifest.json").is_file():
        localisation(args.run, args.max_per_set, args.skip_per_set)
    else:
        print(f"(b) no run at {args.run}: localisation not measured (build it with `nero demo`)")
    if args.native:
        from nero.demo import NATIVE, build_demo

        data = args.run.parent / f".{args.run.name}-data"
        native = args.run.parent / ".heatmaps-native" / "demo-128"
        start = time.perf_counter()
        build_demo(native, data_dir=data, recipe=NATIVE, verbose=False)
        print(
            f"(c) the demo data at {NATIVE.train.img_size} px: {native} "
            f"({time.perf_counter() - start:.0f} s to build or reuse)"
        )
        localisation(native, args.max_per_set, args.skip_per_set)


if __name__ == "__main__":
    main()
