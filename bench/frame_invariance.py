"""Frame-invariant input on real frames: the camera's share of each AUROC, before and after.

    python bench/frame_invariance.py [--data ../shared/data/hyperkvasir-lower-dev]
        [--epochs 9] [--img-size 224] [--seed 42] [--localise 100]
        [--out bench/results/frame_invariance.md]

Trains the same recipe twice on the data's ``id_train`` (``nero train``'s defaults, once with
``--frame auto``, the default, once with ``--frame none``), evaluates both with every
feature-level method and reports for each:

- ID accuracy on ``id_test``;
- the acquisition control per OOD set: every method's AUROC on frame-only copies (tissue
  blanked), the one furthest from 50 and whether the run flags the set;
- NERO ``default``'s AUROC and the best baseline's per set, and the means over sets (NERO's
  against every baseline's);
- the OOD and class heatmaps' share of positive evidence inside the polyp masks, on the
  original image's grid, against chance (the masks' area);
- time: ``nero evaluate``'s wall time for each, the control's extra forward pass, and the
  frame-invariant preprocessing's own cost against the plain resize over the same images.

The data are read where they are (never copied into the repository); without them the bench
says so and stops. Runs and models are kept under ``runs/.bench-frame`` and reused.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import results_io
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nero.data.images import read_image  # noqa: E402
from nero.data.preprocess import Preprocessing  # noqa: E402
from nero.detect.registry import feature_level_methods, method_label  # noqa: E402
from nero.model.train import TrainConfig, train_classifier  # noqa: E402
from nero.run.directory import Run, read_run  # noqa: E402
from nero.run.heatmaps import run_heatmaps  # noqa: E402
from nero.run.pipeline import Folders, evaluate_folders  # noqa: E402
from nero.run.report import comparison_frame  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "hyperkvasir-lower-dev"
WORK = ROOT / "runs" / ".bench-frame"
RESULTS = ROOT / "bench" / "results" / "frame_invariance.md"
FRAMES = ("auto", "none")


def trained(data: Path, frame: str, args: argparse.Namespace) -> tuple[Path, float | None]:
    """The recipe's model for ``frame`` (trained once; its wall time when trained now)."""
    ckpt = WORK / f"resnet18-{frame}-e{args.epochs}-s{args.seed}.pt"
    if ckpt.is_file():
        return ckpt, None
    WORK.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        arch="resnet18", epochs=args.epochs, img_size=args.img_size, seed=args.seed, frame=frame
    )
    start = time.perf_counter()
    train_classifier(data, ckpt, config, progress_bar=False)
    return ckpt, time.perf_counter() - start


def evaluated(data: Path, ckpt: Path, frame: str) -> tuple[Run, float]:
    out = WORK / f"run-{frame}"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_folders(
            Folders(data), out, checkpoint=ckpt, methods=feature_level_methods(),
            embedding=None, heatmap_scale=False, overwrite=True, progress_bar=False,
        )  # fmt: skip
    return read_run(out), time.perf_counter() - start


def mask_of(path: str, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as m:
        return np.asarray(m.convert("L").resize(size, Image.NEAREST)) > 127


def localisation(run: Run, limit: int) -> dict[str, float]:
    """Mean share of positive OOD / class heatmap evidence inside the masks (original grid)."""
    if "mask" not in run.samples.columns:
        return {}
    rows = run.samples[(run.samples["mask"] != "") & run.samples["split"].str.startswith("ood:")]
    picked = rows.iloc[np.linspace(0, len(rows) - 1, min(limit, len(rows))).round().astype(int)]
    shares: dict[str, list[float]] = {"OOD heatmap": [], "class heatmap": [], "chance": []}
    for _, row in picked.iterrows():
        ood, klass = run_heatmaps(run, int(row["index"]), [("ood", None), ("class", None)])
        original = ood.original(long_side=None)
        mask = mask_of(row["mask"], original.shape[::-1])
        shares["chance"].append(float(mask.mean()))
        for name, heat in (("OOD heatmap", ood), ("class heatmap", klass)):
            positive = np.clip(heat.original(long_side=None), 0, None)
            total = positive.sum()
            shares[name].append(float(positive[mask].sum() / total) if total > 0 else 0.0)
    return {k: float(np.mean(v)) for k, v in shares.items()}


def preprocessing_seconds(run: Run, frame: str) -> float:
    """Wall time of the run's preprocessing alone over all its images (decoded once)."""
    images = [read_image(p) for p in run.samples["path"]]
    prepare = Preprocessing(int(run.manifest["img_size"]), frame)
    start = time.perf_counter()
    for image in images:
        prepare(image)
    return time.perf_counter() - start


def forward_seconds(run: Run) -> dict[str, float]:
    """The run's own forward pass (loader workers, batches) over all its images with the
    model's frame-invariant input and with the plain resize: what the preprocessing adds
    where it runs, in ``nero evaluate``'s data loader."""
    from nero.model.extract import forward_batches
    from nero.run.scoring import RunScorer

    scorer = RunScorer(run)
    paths = list(run.samples["path"])
    seconds = {}
    for frame in ("none", "auto", "none", "auto"):  # interleaved: drift hits both alike
        prepare = Preprocessing(int(run.manifest["img_size"]), frame)
        start = time.perf_counter()
        for _ in forward_batches(scorer.model, scorer.head, paths, prepare, device="cpu"):
            pass
        seconds[frame] = min(seconds.get(frame, np.inf), time.perf_counter() - start)
    return seconds


def summary(run: Run) -> dict:
    frame = comparison_frame(run.report, ("auroc", "fpr95"))
    sets = [s for s in frame.columns.get_level_values(0).unique() if s != "mean"]
    baselines = [m for m in frame.index if not m.startswith("nero") and m != "fusion"]
    per_set = {}
    for s in sets:
        best = max(baselines, key=lambda m: frame.loc[m, (s, "auroc")])
        control = run.report["acquisition"]["sets"][s]
        per_set[s] = {
            "nero": frame.loc["nero", (s, "auroc")],
            "nero_fpr95": frame.loc["nero", (s, "fpr95")],
            "best": best,
            "best_auroc": frame.loc[best, (s, "auroc")],
            "control_nero": control["methods"]["nero"]["auroc"],
            "control_furthest": control["furthest"],
            "control_furthest_auroc": control["furthest_auroc"],
            "flagged": control["flagged"],
        }
    means = frame[("mean", "auroc")]
    best_mean = max(baselines, key=lambda m: means[m])
    return {
        "accuracy": run.report["id_accuracy"],
        "sets": per_set,
        "nero_mean": means["nero"],
        "best_mean": best_mean,
        "best_mean_auroc": means[best_mean],
        "control_seconds": run.report["acquisition"]["seconds"],
    }


def table(results: dict[str, dict]) -> list[str]:
    sets = list(next(iter(results.values()))["summary"]["sets"])
    lines = [
        "| input | ID accuracy | " + " | ".join(
            f"{s}: NERO / best baseline / frame-only control (furthest from 50)" for s in sets
        ) + " | mean AUROC: NERO / best baseline |",
        "|---" * (len(sets) + 3) + "|",
    ]  # fmt: skip
    for frame, result in results.items():
        s = result["summary"]
        cells = []
        for name in sets:
            c = s["sets"][name]
            flag = " ⚑" if c["flagged"] else ""
            cells.append(
                f"{c['nero']:.1f} / {c['best_auroc']:.1f} ({method_label(c['best'])}) / "
                f"{c['control_furthest_auroc']:.1f} ({method_label(c['control_furthest'])}){flag}"
            )
        lines.append(
            f"| `--frame {frame}` | {s['accuracy']:.1f} % | " + " | ".join(cells) + " | "
            f"{s['nero_mean']:.2f} / {s['best_mean_auroc']:.2f} ({method_label(s['best_mean'])}) |"
        )
    return lines


def localisation_table(results: dict[str, dict]) -> list[str]:
    lines = [
        "| input | OOD heatmap in the masks | class heatmap in the masks | chance (mask area) | "
        "OOD heatmap / chance |",
        "|---|---|---|---|---|",
    ]
    for frame, result in results.items():
        loc = result["localisation"]
        if loc:
            lines.append(
                f"| `--frame {frame}` | {loc['OOD heatmap']:.3f} | {loc['class heatmap']:.3f} | "
                f"{loc['chance']:.3f} | {loc['OOD heatmap'] / loc['chance']:.2f}× |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--localise", type=int, default=100, help="polyps whose maps are scored")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.data / "id_train").is_dir():
        print(f"skipped: no real development data at {args.data}")
        return 0
    results: dict[str, dict] = {}
    for frame in FRAMES:
        ckpt, train_s = trained(args.data, frame, args)
        run, evaluate_s = evaluated(args.data, ckpt, frame)
        results[frame] = {
            "summary": summary(run),
            "localisation": localisation(run, args.localise),
            "evaluate_s": evaluate_s,
            "train_s": train_s,
            "preprocess_s": preprocessing_seconds(run, frame),
            "forward_s": forward_seconds(run) if frame == "auto" else None,
            "images": len(run.samples),
        }
        print(f"--frame {frame}: {results[frame]['summary']}", flush=True)
    auto, none = results["auto"], results["none"]
    extra = auto["preprocess_s"] - none["preprocess_s"]
    main_pass = auto["evaluate_s"] - auto["summary"]["control_seconds"]
    forward = auto["forward_s"]
    lines = [
        "# Frame-invariant input on the real development set",
        "",
        "<!-- frame-invariance -->",
        f"Measured by `python bench/frame_invariance.py --data {args.data.name} --epochs "
        f"{args.epochs} --img-size {args.img_size} --seed {args.seed} --localise "
        f"{args.localise}` (ResNet-18 from scratch, `nero train` defaults otherwise). Dev "
        "figures only: the project is also judged on real images from another split and "
        "another hospital that are not here. ⚑: the run flags the set (some method separates "
        "its frame-only copies from ID by more than 10 points from 50).",
        "",
        *table(results),
        "",
        *localisation_table(results),
        "",
        f"- `nero evaluate` wall time ({auto['images']} images, every feature-level method): "
        f"`--frame auto` {auto['evaluate_s']:.1f} s, `--frame none` {none['evaluate_s']:.1f} s.",
        f"- the frame-invariant preprocessing itself, over the same images: "
        f"{auto['preprocess_s']:.1f} s against {none['preprocess_s']:.1f} s for the plain "
        f"resize: **+{extra:.1f} s = {100 * extra / main_pass:.1f} % of the evaluation's "
        f"wall time without the control** ({main_pass:.1f} s; measured sequentially, so an "
        "upper bound where data-loading workers overlap it with the forward pass).",
        f"- where it runs, in the evaluation's data loader: the forward pass over all "
        f"{auto['images']} images takes {forward['auto']:.1f} s with it and "
        f"{forward['none']:.1f} s with the plain resize (same model, best of two each): "
        f"**{100 * (forward['auto'] / forward['none'] - 1):+.1f} %**.",
        f"- the acquisition control's extra forward pass: {auto['summary']['control_seconds']:.1f}"
        f" s (`auto`), {none['summary']['control_seconds']:.1f} s (`none`).",
        "<!-- /frame-invariance -->",
    ]
    results_io.publish_result(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
