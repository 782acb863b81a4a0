"""Choose NERO's `default` preset from ID data alone, across several data sets.

    python bench/select_default.py RUN [RUN ...] [--out bench/results/select_default.md]

For every run (e.g. the demo run and a run of the real dev set): the ID-only proxies of
:mod:`nero.run.recommend` (each class held out in turn; corruptions of ID test images) score
every candidate NERO setting. Candidates whose nearest centroid is not the image's own class
for ≥ 95 % of correctly classified ID test images (an explanation that names the wrong class)
are out; of the rest, the best mean proxy AUROC, averaged over the runs, is the default.
Only then are the runs' evaluation OOD sets looked at, to report how the choice does there
next to the release (`reference`) and every baseline of the run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import results_io

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nero.detect.detector import NERO  # noqa: E402
from nero.detect.metrics import ood_metrics  # noqa: E402
from nero.detect.nero_methods import NeroMethod  # noqa: E402
from nero.detect.params import PRESETS  # noqa: E402
from nero.detect.registry import Evidence, create_method, feature_level_methods  # noqa: E402
from nero.detect.relevance import head_relevance  # noqa: E402
from nero.model.classifier import head_arrays  # noqa: E402
from nero.run.checkpoint import load_run_model, run_img_size  # noqa: E402
from nero.run.directory import Run, read_run  # noqa: E402
from nero.run.recommend import PROXY_IMAGES, corrupted_evidence, proxy_aurocs  # noqa: E402

# The settings searched (the rest of `default` is fixed: LRP-ε 0.1, no bias term, no norm
# ratio — chosen by the earlier ablation, bench/results/ablation.md).
GRID = {
    "whiten": ["total", "within"],
    "class_calibration": ["none", "score", "choose"],
    "n_components": ["2/3", "1/3", "1/8"],
    "distance": ["l2", "l1"],
}
EPSILON = 0.1
# An explanation must name the right class: nearest centroid = own class for this share of
# correctly classified ID test images.
MIN_AGREEMENT = 95.0
RESULTS = ROOT / "bench" / "results" / "select_default.md"


def candidates() -> dict[str, dict]:
    found = {"reference": dict(PRESETS["reference"])}
    base = {k: v for k, v in PRESETS["default"].items() if k not in GRID}
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values, strict=True))
        found[" ".join(f"{k}={v}" for k, v in params.items())] = {**base, **params}
    return found


def arrays(run: Run) -> tuple[Evidence, Evidence, dict[str, Evidence], np.ndarray]:
    """Train and test evidence (with labels), the OOD sets, and relevance at ε = 0.1."""
    head = head_arrays(load_run_model(run).head)
    labels = run.samples["label"].to_numpy()

    def rows(mask: np.ndarray) -> Evidence:
        f = np.asarray(run.features[mask], np.float64)
        return Evidence(
            f, np.asarray(run.logits[mask]), head_relevance(f, head, EPSILON), labels[mask]
        )

    split = run.samples["split"].to_numpy()
    ood = {s[4:]: rows(split == s) for s in dict.fromkeys(split) if s.startswith("ood:")}
    return rows(split == "id_train"), rows(split == "id_test"), ood, head


def agreement(params: dict, train: Evidence, test: Evidence) -> float:
    """% of correctly classified ID test images whose nearest centroid is their own class."""
    right = test.logits.argmax(axis=1) == test.labels
    detector = NERO(**params).fit(train.features, train.relevance, train.labels)
    nearest = detector.nearest(test.relevance[right]).label
    return float(100.0 * np.mean(nearest == test.labels[right]))


def on_ood(method, train, test, ood, head) -> dict[str, float]:
    """AUROC of a method on each evaluation OOD set (after the choice: reporting only)."""
    method.fit(train, head)
    id_scores = method.score(test)
    return {k: ood_metrics(id_scores, method.score(v))["auroc"] for k, v in ood.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    start = time.perf_counter()
    settings = candidates()
    per_run: dict[str, dict] = {}
    for path in args.runs:
        run = read_run(path)
        train, test, ood, head = arrays(run)
        model = load_run_model(run)
        test_rows = run.rows("id_test")
        pick = np.unique(np.linspace(0, test_rows.size - 1, PROXY_IMAGES).round().astype(int))
        paths = [run.sample_path(int(test_rows[i])) for i in pick]
        corrupted = corrupted_evidence(model, paths, run_img_size(run), EPSILON, head)
        make = lambda name: NeroMethod(NERO(**settings[name]))  # noqa: B023, E731
        proxies = proxy_aurocs(list(settings), make, train, test, corrupted, head)
        baselines = [m for m in feature_level_methods() if m not in ("nero", "nero_reference")]
        base_proxies = proxy_aurocs(baselines, create_method, train, test, corrupted, head)

        data = (train, test, ood, head)
        per_run[path.name] = {
            "agreement": {name: agreement(settings[name], train, test) for name in settings},
            "proxies": proxies,
            "base_proxies": base_proxies,
            "ood": {name: on_ood(make(name), *data) for name in settings},
            "base_ood": {name: on_ood(create_method(name), *data) for name in baselines},
        }
        print(f"{path}: {len(settings)} settings, {len(baselines)} baselines", flush=True)

    def proxy_mean(results: dict[str, float]) -> float:
        return float(np.mean(list(results.values())))

    score = {
        name: float(np.mean([proxy_mean(r["proxies"][name]) for r in per_run.values()]))
        for name in settings
    }
    eligible = [
        n
        for n in settings
        if n != "reference" and all(r["agreement"][n] >= MIN_AGREEMENT for r in per_run.values())
    ]
    chosen = max(eligible, key=score.get)
    top = sorted(settings, key=score.get, reverse=True)[:8]
    lines = [
        "# Choosing NERO's `default` preset from ID data alone",
        "",
        f"Runs: {', '.join(per_run)}. Proxies (no evaluation OOD set): each ID class held out "
        f"in turn, and 5 corruptions of up to {PROXY_IMAGES} ID test images. Cells: mean proxy "
        "AUROC, then the mean AUROC on the run's evaluation OOD sets (looked at only after the "
        "choice).",
        "",
        f"**Chosen**: {chosen} (mean proxy AUROC over runs {score[chosen]:.2f}; "
        f"{len(eligible)} of {len(settings) - 1} settings name the right class for ≥ "
        f"{MIN_AGREEMENT:.0f} % of correctly classified ID test images on every run).",
        "",
        "<!-- select-table -->",
        "| setting | mean proxy | "
        + " | ".join(f"{r} agreement | {r} proxy | {r} eval OOD" for r in per_run)
        + " |",
        "|---" * (2 + 3 * len(per_run)) + "|",
    ]
    for name in dict.fromkeys([chosen, "reference", *top]):
        cells = []
        for r in per_run.values():
            cells += [
                f"{r['agreement'][name]:.1f}",
                f"{proxy_mean(r['proxies'][name]):.1f}",
                f"{proxy_mean(r['ood'][name]):.1f}",
            ]
        lines.append(f"| {name} | {score[name]:.2f} | " + " | ".join(cells) + " |")
    for label, key in (("best baseline by proxy", "base_proxies"),):
        for run_name, r in per_run.items():
            best = max(r[key], key=lambda m: proxy_mean(r[key][m]))  # noqa: B023
            lines.append(
                f"| {label} on {run_name}: {best} | — | "
                + " | ".join(
                    f"— | {proxy_mean(rr['base_proxies'][best]):.1f} | "
                    f"{proxy_mean(rr['base_ood'][best]):.1f}"
                    for rr in per_run.values()
                )
                + " |"
            )
    lines += ["<!-- /select-table -->", "", "## Evaluation OOD sets, per set (AUROC)", ""]
    for run_name, r in per_run.items():
        sets = list(next(iter(r["ood"].values())))
        lines += [f"### {run_name}", "", "| method | " + " | ".join(sets) + " | mean |"]
        lines.append("|---" * (len(sets) + 2) + "|")
        rows = {f"NERO {chosen}": r["ood"][chosen], "NERO reference": r["ood"]["reference"]}
        rows.update(r["base_ood"])
        for name, values in sorted(rows.items(), key=lambda kv: -proxy_mean(kv[1])):
            lines.append(
                f"| {name} | "
                + " | ".join(f"{values[s]:.1f}" for s in sets)
                + f" | {proxy_mean(values):.1f} |"
            )
        lines.append("")
    lines.append(f"Total time {time.perf_counter() - start:.0f} s.")
    results_io.publish_result(args.out, lines)


if __name__ == "__main__":
    main()
