# ruff: noqa: E501  (Markdown table rows)
"""Conformal p-values and fusion on real runs: is the false-alarm rate what it promises, and
does fusion beat the single detectors?

    python bench/conformal.py [RUN ...]
        (default: runs/demo runs/.bench-frame/run-auto runs/.bench-real/hk-dev, those present)

For each run made by ``nero evaluate`` (``nero demo``; ``bench/frame_invariance.py``'s
frame-invariant real-data run; ``bench/real_data.py``'s run of the shared real-data model):

- **validity**: the share of ID test images flagged at α = 5 % by the run's cross-fitted
  p-values (``report.json`` ``conformal``), for NERO, fusion and the range over all methods;
  beside it, what calibrating on the *training* images instead would give (why the run never
  does: the model was trained on them);
- **detection**: fusion's AUROC / FPR95 per OOD set and its mean, against the best single
  method's mean and each set's median method;
- **cost**: the calibration and fusion step's own time on the run's scores, against the
  evaluation's forward pass measured on the same machine (``seconds`` of the run's
  acquisition control, one extra pass over at most 500 images per split, scaled).

Writes bench/results/conformal.md (its ``<!-- conformal -->`` part goes into the README via
bench/readme_tables.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import results_io

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nero.detect.metrics import auroc  # noqa: E402
from nero.detect.registry import method_label  # noqa: E402
from nero.run.conformal import ALPHA, COMBINATION_NAMES, COMBINATIONS, FUSION, combine, p_values  # noqa: E402
from nero.run.directory import Run, read_run  # noqa: E402
from nero.run.pipeline import _calibrate  # noqa: E402
from nero.run.report import comparison_frame  # noqa: E402

DEFAULT_RUNS = ("runs/demo", "runs/.bench-frame/run-auto", "runs/.bench-real/hk-dev")
RESULTS = ROOT / "bench" / "results" / "conformal.md"
NAMES = {
    "demo": "demo",
    "run-auto": "real dev, frame-invariant model",
    "hk-dev": "real dev, shared model",
}


def validity(run: Run) -> dict:
    fpr = run.report["conformal"]["realised_fpr"]
    singles = {m: v for m, v in fpr.items() if m != FUSION}
    train, test = run.rows("id_train"), run.rows("id_test")
    on_train = {
        m: 100.0
        * np.mean(
            p_values(run.scores[m].to_numpy()[train], run.scores[m].to_numpy()[test]) <= ALPHA
        )
        for m in singles
    }
    return {
        "nero": fpr.get("nero"),
        "fusion": fpr.get(FUSION),
        "range": (min(singles.values()), max(singles.values())),
        "train_nero": on_train.get("nero"),
        "train_range": (min(on_train.values()), max(on_train.values())),
        "smallest_p": run.report["conformal"]["smallest_p"],
    }


def detection(run: Run) -> dict:
    frame = comparison_frame(run.report, ("auroc", "fpr95"))
    sets = [s for s in frame.columns.get_level_values(0).unique() if s != "mean"]
    singles = [m for m in frame.index if m != FUSION]
    best = max(singles, key=lambda m: frame.loc[m, ("mean", "auroc")])
    per_set = {
        s: {
            "fusion": frame.loc[FUSION, (s, "auroc")],
            "fusion_fpr95": frame.loc[FUSION, (s, "fpr95")],
            "median": float(np.median(frame.loc[singles, (s, "auroc")])),
            "best": frame.loc[singles, (s, "auroc")].max(),
        }
        for s in sets
    }
    return {
        "sets": per_set,
        "ceiling": ceiling(run, sorted(singles, key=lambda m: -frame.loc[m, ("mean", "auroc")])),
        "fusion_mean": frame.loc[FUSION, ("mean", "auroc")],
        "best": best,
        "best_mean": frame.loc[best, ("mean", "auroc")],
        "members": run.report[FUSION]["members"],
        "combination": run.report[FUSION].get("combination", "fisher"),
    }


CEILING_POOL = 12  # the best single methods whose pairs and triples the ceiling tries


def ceiling(run: Run, ranked: list[str]) -> tuple[float, list[str], str]:
    """The best mean AUROC any fusion (any of the run's combinations) of 2 or 3 of the top
    single methods reaches, its members and combination, chosen *with the OOD labels*: what no
    ID-only choice can beat (judging only)."""
    test = run.rows("id_test")
    sets = [run.rows(f"ood:{s}") for s in run.ood_sets]
    pool = [m for m in ranked if run.p_value(m) is not None][:CEILING_POOL]
    p = {m: np.asarray(run.p_value(m), np.float64) for m in pool}

    def mean_auroc(score: np.ndarray) -> float:
        return float(np.mean([auroc(score[test], score[rows]) for rows in sets]))

    best = (-np.inf, [], "")
    for combination in COMBINATIONS:
        for k in (2, 3):
            for members in itertools.combinations(pool, k):
                value = mean_auroc(combine([p[m] for m in members], combination))
                if value > best[0]:
                    best = (value, list(members), combination)
    return best


def cost(run: Run) -> dict:
    """The calibration step's time on the run's scores, and the forward pass it sits beside."""
    scores = {m: run.scores[m].to_numpy().copy() for m in run.methods if m != FUSION}
    report = {
        "results": {s: {} for s in run.ood_sets},
        "recommended": run.report.get("recommended", {}),
    }
    labels = run.samples["label"].to_numpy()
    splits = run.samples["split"].to_numpy(object)
    candidates = list(scores)
    start = time.perf_counter()
    for _ in range(5):
        _calibrate(dict(report), dict(scores), candidates, labels, run.rows("id_test"), splits,
                   int(run.manifest.get("seed", 42)))  # fmt: skip
    seconds = (time.perf_counter() - start) / 5
    control = run.report.get("acquisition", {})
    # The control is one forward pass over min(500, n) images per split: scale it to the run.
    per_split = run.samples["split"].value_counts()
    control_images = int(np.minimum(per_split, 500).sum())
    forward = control.get("seconds", float("nan")) * len(run.samples) / max(control_images, 1)
    return {"seconds": seconds, "forward": forward, "images": len(run.samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    paths = args.runs or [ROOT / p for p in DEFAULT_RUNS if (ROOT / p / "manifest.json").is_file()]
    rows_v, rows_d, rows_c = [], [], []
    for path in paths:
        run = read_run(path)
        if FUSION not in run.report or "conformal" not in run.report:
            print(f"skipped {path}: made before conformal p-values (re-run nero evaluate)")
            continue
        name = NAMES.get(path.name, path.name)
        v, d, c = validity(run), detection(run), cost(run)
        rows_v.append(
            f"| {name} | {v['nero']:.1f} | {v['fusion']:.1f} | {v['range'][0]:.1f}–{v['range'][1]:.1f} "
            f"| {v['train_nero']:.1f} | {v['train_range'][0]:.1f}–{v['train_range'][1]:.1f} | {v['smallest_p']:.3f} |"
        )
        sets = "; ".join(
            f"{s} {x['fusion']:.1f} / {x['fusion_fpr95']:.0f} (median {x['median']:.1f}, best {x['best']:.1f})"
            for s, x in d["sets"].items()
        )
        members = (
            ", ".join(method_label(m) for m in d["members"])
            + f"; {COMBINATION_NAMES[d['combination']]}"
        )
        top, chosen, how = d["ceiling"]
        rows_d.append(
            f"| {name} | {members} | {d['fusion_mean']:.2f} | {d['best_mean']:.2f} ({method_label(d['best'])}) "
            f"| {d['fusion_mean'] - d['best_mean']:+.2f} | {top:.2f} ({', '.join(method_label(m) for m in chosen)}, {how}; "
            f"{top - d['best_mean']:+.2f}) | {sets} |"
        )
        rows_c.append(
            f"| {name} | {c['images']} | {1000 * c['seconds']:.0f} ms | {c['forward']:.1f} s "
            f"| {100 * c['seconds'] / c['forward']:.2f} % |"
        )
        print(f"{name}: {v} {d} {c}", flush=True)
    lines = [
        "# Conformal p-values and fusion",
        "",
        "<!-- conformal -->",
        f"Measured by `python bench/conformal.py` on {len(rows_v)} runs. α = {ALPHA:.0%}.",
        "",
        "**Validity**: % of ID test images flagged at α (cross-fitted p-values; the promise is ≈ 5 %). "
        "Beside it, the same with the *training* images as calibration set, which the run never uses.",
        "",
        "| run | NERO | fusion | all methods | NERO, calibrated on training images | all methods, on training images | smallest p-value possible |",
        "|---|---|---|---|---|---|---|",
        *rows_v,
        "",
        "**Detection**: fusion's AUROC / FPR95 per OOD set (%), against each set's median and best single method, "
        "and its mean against the best single method's mean.",
        "",
        "The ceiling is the best any fusion (Fisher, Stouffer or min-p) of two or three of the run's "
        f"{CEILING_POOL} best single methods reaches, its members picked *with the OOD labels* "
        "(never what a run does: it says how far ID-only choice could get at all).",
        "",
        "| run | members; combination (chosen from ID data) | fusion mean AUROC | best single mean | difference | ceiling: best 2–3 members chosen on the OOD sets (vs best single) | per set |",
        "|---|---|---|---|---|---|---|",
        *rows_d,
        "",
        "**Cost**: the calibration and fusion step on the run's scores, against one forward pass over the run.",
        "",
        "| run | images | calibration + fusion | forward pass | share |",
        "|---|---|---|---|---|",
        *rows_c,
        "<!-- /conformal -->",
    ]
    results_io.publish_result(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
