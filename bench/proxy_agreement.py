"""Do the recommendation's ID-only proxies rank the methods as the real OOD sets do?

    python bench/proxy_agreement.py [RUN ...]   (default: runs/.bench-real/hk-dev runs/demo)

For each run made by ``nero evaluate`` with a recommendation (``bench/real_data.py`` builds
both default runs), the Spearman rank correlation, across the run's feature-level methods,
between each proxy's AUROC (and the mean over proxies, which picks the recommendation) and
the method's mean AUROC over the run's evaluation OOD sets (then each OOD set alone). A
correlation near 1 means the proxies foresee which method wins on the OOD sets; near 0, that
ID-only evidence cannot. The evaluation sets are only read here, to judge the proxies;
nothing is chosen on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import results_io
from scipy.stats import spearmanr

DEFAULT_RUNS = ("runs/.bench-real/hk-dev", "runs/demo")
RESULTS = Path(__file__).parent / "results" / "proxy_agreement.md"


def agreement(report: dict) -> tuple[dict[str, float], str, str]:
    """Spearman ρ per proxy (and "mean of proxies"), the recommended and the best method."""
    recommended = report["recommended"]
    methods = list(recommended["ranking"])
    results = report["results"]
    evaluation = {m: float(np.mean([results[s][m]["auroc"] for s in results])) for m in methods}
    target = [evaluation[m] for m in methods]
    proxies = recommended["proxies"]
    kinds = list(dict.fromkeys(k for m in methods for k in proxies[m]))
    rho = {
        kind: float(spearmanr([proxies[m].get(kind, np.nan) for m in methods], target)[0])
        for kind in kinds
    }
    rho["mean of proxies"] = float(
        spearmanr([recommended["ranking"][m] for m in methods], target)[0]
    )
    return rho, recommended["method"], max(evaluation, key=evaluation.get)


def set_agreement(report: dict) -> dict[str, float]:
    """Spearman ρ between each OOD set's AUROC and the mean of the proxies, per OOD set."""
    recommended = report["recommended"]
    methods = list(recommended["ranking"])
    proxy_mean = [recommended["ranking"][m] for m in methods]
    return {
        name: float(spearmanr(proxy_mean, [sets[m]["auroc"] for m in methods])[0])
        for name, sets in report["results"].items()
    }


def summary_row(name: str, report: dict) -> str:
    """One row of the README's table: the proxies against the OOD sets, and the sets' own ρ."""
    rho, chosen, best = agreement(report)
    each = ", ".join(f"{k} {v:+.2f}" for k, v in set_agreement(report).items())
    sets = report["results"]
    between = "—"
    if len(sets) == 2:  # do the OOD sets themselves agree on which method is best?
        # the detectors themselves; fusion is derived from some of them
        a, b = ([x for m, x in v.items() if m != "fusion"] for v in sets.values())
        between = f"{spearmanr([x['auroc'] for x in a], [x['auroc'] for x in b])[0]:+.2f}"
    return f"| {name} | {rho['mean of proxies']:+.2f} | {each} | {between} | {chosen} | {best} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*", type=Path, default=[Path(r) for r in DEFAULT_RUNS])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        path = run / "report.json"
        if not path.is_file():
            print(f"{run}: no report.json (build it with bench/real_data.py); skipped")
            continue
        report = json.loads(path.read_text())
        if "recommended" not in report:
            print(f"{run}: no recommendation in its report; skipped")
            continue
        rho, chosen, best = agreement(report)
        print(f"\n{run} (recommended {chosen}; best on the OOD sets {best})")
        print("| proxy | Spearman ρ with the OOD sets' mean AUROC |\n|---|---|")
        for kind, value in rho.items():
            print(f"| {kind} | {value:+.2f} |")
        rows.append(summary_row(run.name, report))
    if rows:
        table = "\n".join(
            [
                "Spearman ρ across the feature-level methods (`python bench/proxy_agreement.py`):",
                "",
                "| run | ID-only proxies vs the OOD sets' mean AUROC | vs each OOD set "
                "| the two OOD sets vs each other | recommended | best on the OOD sets |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        )
        print("\n" + table)
        results_io.write_result(
            args.out,
            f"# bench/proxy_agreement.py\n\n<!-- proxy-agreement -->\n{table}\n"
            "<!-- /proxy-agreement -->",
        )


if __name__ == "__main__":
    main()
