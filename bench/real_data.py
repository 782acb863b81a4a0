"""Real development data and the demo, side by side: detection, the nearest centroid, heatmaps.

    python bench/real_data.py [--real ../shared/data/hyperkvasir-lower-dev]
        [--model ../shared/models/hyperkvasir-lower-resnet18.pt] [--demo runs/demo]
        [--localise 500] [--deletion 50] [--out bench/results/real_data.md]

Reads the real development set and its model when they exist (never copied into the
repository) and skips that part cleanly otherwise. For each data set (its run is built once
under runs/.bench-real and reused):

1. **detection**: AUROC / FPR95 of every method on every OOD set, NERO `default`, the
   release (`reference`) and the run's ID-only recommendation marked;
2. **explanations name the right class**: share of correctly classified ID test images whose
   nearest centroid is their own class, `default` and `reference`;
3. **localisation**: share of positive heatmap relevance inside the ground-truth masks (OOD
   heatmap, class heatmap, Gradient×Input, and chance = the masks' area), and the pointing
   game;
4. **faithfulness**: deletion curves — the top-k % pixels by each map replaced by a blurred
   copy, the image re-scored by NERO; the area under score-vs-k (normalised by the clean
   score; lower = the map finds what makes the image unusual faster), against random pixels;
5. **does the score come from the lesion at all?** The lesion is in-painted (filled from the
   pixels around it) and, as a control, a region of the same shape elsewhere on the tissue;
   if removing the lesion lowers the score no more often than removing the control, no
   heatmap can truthfully point at the lesion — the detector's evidence is elsewhere.

Localisation is also given inside the field of view found from the image
(:mod:`nero.explain.field_of_view`), with the share of each map's evidence on the frame.

Writes a Markdown report whose tables `bench/readme_tables.py` copies into the README.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import results_io
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nero.detect.detector import NERO  # noqa: E402
from nero.detect.params import PRESETS  # noqa: E402
from nero.detect.registry import method_label  # noqa: E402
from nero.explain.attribution import HeatmapRequest, compute_heatmaps  # noqa: E402
from nero.explain.faithfulness import deletion_area  # noqa: E402
from nero.explain.field_of_view import field_of_view, frame_share  # noqa: E402
from nero.explain.rules import PLAIN_GRADIENT_X_INPUT  # noqa: E402
from nero.run.checkpoint import run_preprocessing  # noqa: E402
from nero.run.directory import Run, read_run  # noqa: E402
from nero.run.heatmaps import load_run_model, ood_deviation, run_envelope, sample_image  # noqa: E402
from nero.run.pipeline import Folders, evaluate_folders  # noqa: E402
from nero.run.report import comparison_frame  # noqa: E402
from nero.run.scoring import RunScorer  # noqa: E402

SHARED = ROOT.parent / "shared"
REAL_DATA = SHARED / "data" / "hyperkvasir-lower-dev"
REAL_MODEL = SHARED / "models" / "hyperkvasir-lower-resnet18.pt"
WORK = ROOT / "runs" / ".bench-real"
RESULTS = ROOT / "bench" / "results" / "real_data.md"
MAPS = ("OOD heatmap", "class heatmap", "Gradient×Input")


# ---------------------------------------------------------------- runs
def real_run(data: Path, model: Path) -> Run:
    out = WORK / "hk-dev"
    try:
        return read_run(out)
    except ValueError:
        pass
    print(f"evaluating the real development set once: {out}", flush=True)
    evaluate_folders(
        Folders(data), out, checkpoint=model, methods=_feature_methods(), overwrite=True
    )
    return read_run(out)


def _feature_methods() -> list[str]:
    from nero.detect.registry import feature_level_methods

    return feature_level_methods()


# ---------------------------------------------------------------- 1. detection
def detection_table(run: Run) -> str:
    frame = comparison_frame(run.report, ("auroc", "fpr95"))
    sets = [s for s in frame.columns.get_level_values(0).unique() if s != "mean"]
    recommended = run.report.get("recommended", {}).get("method")
    lines = ["| method | " + " | ".join(f"{s} AUROC / FPR95" for s in [*sets, "mean"]) + " |"]
    lines.append("|---" * (len(sets) + 2) + "|")
    for method in frame.index:
        name = {"nero": "NERO `default`", "nero_reference": "NERO `reference` (release)"}.get(
            method, method_label(method)
        )
        if method == recommended:
            name = f"**{name}** (recommended, ID data only)"
        cells = [
            f"{frame.loc[method, (s, 'auroc')]:.2f} / {frame.loc[method, (s, 'fpr95')]:.2f}"
            for s in [*sets, "mean"]
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- 2. nearest centroid
def agreement(run: Run, preset: str) -> float:
    split = run.samples["split"].to_numpy()
    labels = run.samples["label"].to_numpy()
    train, test = split == "id_train", split == "id_test"
    right = test & (run.samples["pred"].to_numpy() == labels)
    relevance = np.asarray(run.relevance, np.float64)
    if preset == "reference":  # the release's relevance is LRP-0
        from nero.detect.relevance import head_relevance
        from nero.model.classifier import head_arrays

        head = head_arrays(load_run_model(run).head)
        relevance = head_relevance(np.asarray(run.features, np.float64), head, 0.0)
    params = {**PRESETS[preset]} if preset != "default" else run.detector.get_params()
    detector = NERO(**params).fit(run.features[train], relevance[train], labels[train])
    return float(100 * np.mean(detector.nearest(relevance[right]).label == labels[right]))


# ---------------------------------------------------------------- 3. localisation
def maps_of(run: Run, index: int) -> dict[str, np.ndarray]:
    """The three maps of one sample on the original image's grid (where its mask lies)."""
    loaded = load_run_model(run)
    arch = run.manifest["model"]["arch"]
    preprocessing = run_preprocessing(run)
    prepared = preprocessing.prepare(sample_image(run, index))
    tensor = preprocessing.normalise(prepared).unsqueeze(0)
    deviation, cls = ood_deviation(run, index)
    ood, klass = compute_heatmaps(
        loaded.model,
        loaded.head,
        tensor,
        arch,
        [HeatmapRequest("ood", cls, deviation), HeatmapRequest("class")],
        envelope=run_envelope(run),
    )
    (gxi,) = compute_heatmaps(
        loaded.model,
        loaded.head,
        tensor,
        arch,
        [HeatmapRequest("class")],
        rules=PLAIN_GRADIENT_X_INPUT,
    )
    return {
        "OOD heatmap": ood.located(prepared).original(long_side=None),
        "class heatmap": klass.located(prepared).original(long_side=None),
        "Gradient×Input": gxi.located(prepared).original(long_side=None),
    }


def mask_at(path: str, shape: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as m:
        return np.asarray(m.convert("L").resize(shape[::-1], Image.NEAREST)) > 127


def localisation(run: Run, limit: int) -> dict[str, dict[str, float]]:
    """Per OOD set with masks: mean share inside the mask, pointing game, chance."""
    if "mask" not in run.samples.columns:
        return {}
    rows = run.samples[(run.samples["mask"] != "") & run.samples["split"].str.startswith("ood:")]
    out: dict[str, dict[str, list]] = {}
    for split, group in rows.groupby("split", sort=True):
        picked = group.iloc[np.linspace(0, len(group) - 1, min(limit, len(group))).astype(int)]
        acc: dict[str, list] = {}
        for _, row in picked.iterrows():
            maps = maps_of(run, int(row["index"]))
            shape = next(iter(maps.values())).shape
            mask = mask_at(row["mask"], shape)
            image = np.asarray(sample_image(run, int(row["index"])).resize(shape[::-1]))
            fov = field_of_view(image)
            acc.setdefault("chance", []).append(mask.mean())
            acc.setdefault("chance in FOV", []).append(mask[fov].mean())
            for name, rel in maps.items():
                positive = np.clip(rel, 0, None)
                inside = positive * fov
                for key, values in ((name, positive), (f"{name} in FOV", inside)):
                    total = values.sum()
                    acc.setdefault(key, []).append(values[mask].sum() / total if total > 0 else 0)
                acc.setdefault(f"{name} pointing", []).append(float(mask.flat[int(np.argmax(rel))]))
                acc.setdefault(f"{name} on frame", []).append(frame_share(rel, image).frame)
        out[split[4:]] = {k: float(np.mean(v)) for k, v in acc.items()}
    return out


# ---------------------------------------------------------------- 4. deletion
def deletion(run: Run, limit: int, seed: int = 0) -> dict[str, float]:
    """Mean deletion area (:mod:`nero.explain.faithfulness`) of each map, and random pixels."""
    scorer = RunScorer(run, methods=["nero"])
    rows = run.samples[run.samples["split"].str.startswith("ood:")]
    picked = rows.iloc[np.linspace(0, len(rows) - 1, min(limit, len(rows))).astype(int)]
    rng = np.random.default_rng(seed)

    def nero_score(images) -> np.ndarray:
        return scorer.score_images(images).scores["nero"].to_numpy()

    areas: dict[str, list] = {m: [] for m in [*MAPS, "random pixels"]}
    for _, row in picked.iterrows():
        index = int(row["index"])
        maps = maps_of(run, index)
        maps["random pixels"] = rng.random(next(iter(maps.values())).shape)
        image = sample_image(run, index)
        for name, rel in maps.items():
            areas[name].append(deletion_area(nero_score, image, rel))
    return {k: float(np.mean(v)) for k, v in areas.items()}


# ---------------------------------------------------------------- 5. lesion removal
def inpaint(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Fill ``region`` from the pixels around it (normalised Gaussian blur of the rest)."""
    from scipy import ndimage

    keep = (~region).astype(np.float64)
    sigma = max(2.0, 0.25 * np.sqrt(region.sum()))
    weight = ndimage.gaussian_filter(keep, sigma)
    filled = (
        np.stack([ndimage.gaussian_filter(image[..., c] * keep, sigma) for c in range(3)], -1)
        / np.maximum(weight, 1e-6)[..., None]
    )
    return np.where(region[..., None], filled, image).clip(0, 255).astype(np.uint8)


def lesion_removal(run: Run, limit: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per OOD set: share of images whose score drops when the lesion is in-painted, and
    when a same-shape region of tissue elsewhere is (the control)."""
    from nero.data.images import read_image

    scorer = RunScorer(run, methods=["nero"])
    rng = np.random.default_rng(seed)
    rows = run.samples[(run.samples["mask"] != "") & run.samples["split"].str.startswith("ood:")]
    out = {}
    for split, group in rows.groupby("split", sort=True):
        picked = group.iloc[np.linspace(0, len(group) - 1, min(limit, len(group))).astype(int)]
        lower_lesion, lower_control = [], []
        for _, row in picked.iterrows():
            image = np.asarray(read_image(row["path"]))
            mask = mask_at(row["mask"], image.shape[:2])
            fov = field_of_view(image)
            shift = (int(rng.integers(image.shape[0])), int(rng.integers(image.shape[1])))
            control = np.roll(mask, shift, axis=(0, 1)) & fov & ~mask
            versions = [image, inpaint(image, mask), inpaint(image, control)]
            scores = scorer.score_images([Image.fromarray(v) for v in versions]).scores["nero"]
            lower_lesion.append(scores.iat[1] < scores.iat[0])
            lower_control.append(scores.iat[2] < scores.iat[0])
        out[split[4:]] = (float(np.mean(lower_lesion)), float(np.mean(lower_control)))
    return out


# ---------------------------------------------------------------- report
def report(name: str, run: Run, args: argparse.Namespace) -> list[str]:
    start = time.perf_counter()
    lines = [
        f"## {name}",
        "",
        f"Run: `{run.path}`, ID test accuracy {run.report['id_accuracy']:.2f} %.",
        "",
    ]
    lines += [f"<!-- {name}-detection -->", detection_table(run), f"<!-- /{name}-detection -->", ""]
    rec = run.report.get("recommended")
    if rec:
        lines.append(
            f"Recommended from ID data alone: **{rec['method']}** (mean proxy AUROC "
            f"{rec['mean_proxy_auroc']:.1f} ± {rec['spread']:.1f}; runner-up {rec['runner_up']}, "
            f"{rec['margin']:.1f} behind)."
        )
        lines.append("")
    agree = {p: agreement(run, p) for p in ("default", "reference")}
    lines.append(
        "Nearest centroid = own class (correctly classified ID test images): "
        + ", ".join(f"`{p}` {v:.1f} %" for p, v in agree.items())
        + "."
    )
    lines.append("")
    loc = localisation(run, args.localise)
    if loc:
        lines.append(f"<!-- {name}-localisation -->")
        lines.append(
            "| OOD set | " + " | ".join(MAPS) + " | chance | the same inside the field of view "
            "(chance) | share of evidence on the frame | pointing game |"
        )
        lines.append("|---" * (len(MAPS) + 5) + "|")
        for split, v in loc.items():
            inside = " / ".join(f"{v[f'{m} in FOV']:.3f}" for m in MAPS)
            frame = " / ".join(f"{v[f'{m} on frame']:.2f}" for m in MAPS)
            pointing = " / ".join(f"{v[f'{m} pointing']:.2f}" for m in MAPS)
            lines.append(
                f"| {split} | "
                + " | ".join(f"{v[m]:.3f}" for m in MAPS)
                + f" | {v['chance']:.3f} | {inside} ({v['chance in FOV']:.3f}) | {frame} | "
                + f"{pointing} |"
            )
        lines.append(f"<!-- /{name}-localisation -->")
        lines.append("")
        removal = lesion_removal(run, args.deletion)
        lines.append(
            "Removing the lesion (in-painted from its surroundings) lowers NERO's score in: "
            + "; ".join(
                f"{k} {lesion:.0%} of images (a same-shape tissue region elsewhere: {control:.0%})"
                for k, (lesion, control) in removal.items()
            )
            + "."
        )
        lines.append("")
    dele = deletion(run, args.deletion)
    lines.append(
        "Deletion (area under the normalised NERO score as the top 5–40 % pixels are blurred; "
        "lower = faster): " + ", ".join(f"{k} {v:.3f}" for k, v in dele.items()) + "."
    )
    lines += ["", f"({time.perf_counter() - start:.0f} s)", ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--real", type=Path, default=REAL_DATA)
    p.add_argument("--model", type=Path, default=REAL_MODEL)
    p.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo")
    p.add_argument("--localise", type=int, default=500, help="masked images per OOD set")
    p.add_argument("--deletion", type=int, default=50, help="OOD images in the deletion test")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lines = ["# Real development data and the demo", ""]
    if args.real.is_dir() and args.model.is_file():
        lines += report("real", real_run(args.real, args.model), args)
    else:
        print(f"skipping the real data: {args.real} or {args.model} is not here")
    if (args.demo / "manifest.json").is_file():
        lines += report("demo", read_run(args.demo), args)
    results_io.publish_result(args.out, lines)


if __name__ == "__main__":
    main()
