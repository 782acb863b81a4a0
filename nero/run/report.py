"""The comparison of every method in a run: text table, Markdown or CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nero.run.directory import Run
from nero.tables import safe_csv

METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
# Which direction is better for each metric (FPR95: lower).
HIGHER_IS_BETTER = {"auroc": True, "fpr95": False, "aupr_in": True, "aupr_out": True}
SHOWN = ("auroc", "fpr95")


def comparison_frame(report: dict, metrics: tuple[str, ...] = SHOWN) -> pd.DataFrame:
    """Rows = methods, columns = (OOD set, metric) plus the mean over sets; sorted by AUROC."""
    results = report["results"]
    sets = list(results)
    methods = list(dict.fromkeys(m for s in sets for m in results[s]))
    columns = pd.MultiIndex.from_tuples(
        [(s, m) for s in [*sets, "mean"] for m in metrics], names=["ood set", "metric"]
    )
    frame = pd.DataFrame(index=methods, columns=columns, dtype=float)
    for s in sets:
        for method, values in results[s].items():
            for m in metrics:
                frame.loc[method, (s, m)] = values[m]
    for m in metrics:
        frame[("mean", m)] = frame.loc[:, [(s, m) for s in sets]].mean(axis=1).round(2)
    frame.index.name = "method"
    return frame.sort_values(("mean", "auroc"), ascending=False)


def best_mask(frame: pd.DataFrame) -> pd.DataFrame:
    """True where a cell is the best of its column (ties all marked)."""
    mask = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    for col in frame.columns:
        values = frame[col].to_numpy(float)
        if np.isnan(values).all():
            continue
        best = np.nanmax(values) if HIGHER_IS_BETTER[col[1]] else np.nanmin(values)
        mask[col] = values == best
    return mask


REPORT_FORMATS = ("table", "markdown", "csv")


def format_report(run: Run, fmt: str = "table") -> str:
    frame = comparison_frame(run.report)
    if fmt == "csv":
        flat = frame.copy()
        flat.columns = [f"{s}/{m}" for s, m in frame.columns]
        return safe_csv(flat, index=True)
    best = best_mask(frame)
    cells = frame.map(lambda v: f"{v:.2f}")
    marker = "**{}**" if fmt == "markdown" else "{}*"
    cells = cells.where(~best, cells.map(marker.format))
    header = f"ID accuracy: {run.report['id_accuracy']:.2f} %   (AUROC ↑ / FPR95 ↓, best marked)"
    cols = [f"{s} {m.upper()}" for s, m in frame.columns]
    if fmt == "markdown":
        lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in cells.iterrows()]
        return header + "\n\n" + "\n".join(lines) + acquisition_lines(run.report)
    widths = [max(len(c), 8) for c in cols]
    name_w = max(len("method"), *(len(i) for i in cells.index))

    def line(name: str, values: list[str]) -> str:
        padded = (v.rjust(w) for v, w in zip(values, widths, strict=True))
        return name.ljust(name_w) + "  " + "  ".join(padded)

    lines = [line("method", cols)] + [line(name, list(row)) for name, row in cells.iterrows()]
    return header + "\n" + "\n".join(lines) + acquisition_lines(run.report)


def acquisition_lines(report: dict) -> str:
    """The acquisition control in words: per OOD set, the frame-only AUROC furthest from 50."""
    control = report.get("acquisition")
    if not control or not control.get("sets"):
        return ""
    lines = [
        "",
        "Acquisition control (AUROC on frame-only copies, tissue blanked; 50 = the frame "
        f"tells nothing, flagged beyond 50 ± {control['margin']:.0f}):",
    ]
    for name, result in control["sets"].items():
        nero = result["methods"].get("nero", {}).get("auroc")
        lines.append(
            f"  {name}: furthest {result['furthest']} {result['furthest_auroc']:.1f}"
            + (f", NERO {nero:.1f}" if nero is not None else "")
            + (f" — FLAG: {result['flag']}" if result["flagged"] else "")
        )
    return "\n".join(lines)


# A set where the method does this badly is flagged on the overview: near or below chance,
# or flagging nearly every normal image to catch 95 % of the set.
WEAK_AUROC = 60.0
WEAK_FPR95 = 95.0


def weak_sets(report: dict, method: str) -> dict[str, dict[str, float]]:
    """The OOD sets on which ``method`` is below :data:`WEAK_AUROC` AUROC or at or above
    :data:`WEAK_FPR95` FPR95: ``{set: {"auroc", "fpr95"}}``."""
    out = {}
    for name, by_method in report.get("results", {}).items():
        got = by_method.get(method)
        if got and (got["auroc"] < WEAK_AUROC or got["fpr95"] >= WEAK_FPR95):
            out[name] = {"auroc": got["auroc"], "fpr95": got["fpr95"]}
    return out
