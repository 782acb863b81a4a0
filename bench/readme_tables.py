"""Write the README's result tables from the runs and bench results they come from.

    python bench/readme_tables.py [--demo runs/demo] [--readme README.md]

Every table sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers in the
README and is replaced whole, so the README never holds a typed-in figure:

- ``demo-table``: the demo run's report (``nero demo``: seeded data, deterministic training
  on pinned code paths);
- ``real-detection`` / ``real-localisation`` / ``demo-localisation`` / ``select-table``: copied from
  ``bench/results/real_data.md`` and ``bench/results/select_default.md`` when present
  (those need the real development data, read from ``../shared/data``);
- ``ablation-table``: the presets and the best baseline across architectures × seeds, the
  rows of ``bench/results/ablation.md``'s AUROC table (``bench/ablation.py``);
- ``scale-table``: ``bench/results/scale.md`` (``bench/scale.py``);
- ``proxy-agreement``: ``bench/results/proxy_agreement.md`` (``bench/proxy_agreement.py``);
- ``frame-invariance``: ``bench/results/frame_invariance.md`` (``bench/frame_invariance.py``);
- ``conformal``: ``bench/results/conformal.md`` (``bench/conformal.py``);
- ``demo-reproducibility``: ``bench/results/demo_reproducibility.md``
  (``bench/demo_reproducibility.py``);
- ``dashboard-speed``: ``bench/results/dashboard.md`` (``bench/dashboard.py --browser``);
  ``dashboard-speed-real``: ``bench/results/dashboard_real.md`` (the same on a real-data run);
- ``clinician-walk``: ``bench/results/clinician_walk.md`` (``bench/clinician_walk.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nero.detect.registry import method_label  # noqa: E402
from nero.run.directory import read_run  # noqa: E402
from nero.run.report import comparison_frame  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# Rows of the demo table: the release, the baseline everyone knows, NERO, the best baseline.
DEMO_ROWS = ("msp", "nero_reference", "nero", "fusion")


def demo_table(run_path: Path) -> str:
    run = read_run(run_path)
    frame = comparison_frame(run.report, ("auroc", "fpr95"))
    sets = [s for s in frame.columns.get_level_values(0).unique() if s != "mean"]
    baselines = [m for m in frame.index if m not in ("nero", "nero_reference", "fusion")]
    best = max(baselines, key=lambda m: frame.loc[m, ("mean", "auroc")])
    recommended = run.report.get("recommended", {}).get("method")
    rows = [m for m in DEMO_ROWS if m in frame.index] + [best]
    if recommended and recommended not in rows:
        rows.append(recommended)
    head = "| method (AUROC / FPR95, %) | " + " | ".join([*sets, "mean"]) + " |"
    lines = [head, "|---" * (len(sets) + 2) + "|"]
    names = {"nero": "NERO `default`", "nero_reference": "NERO `reference` (the release)"}
    for m in rows:
        name = names.get(m, method_label(m))
        if m == best:
            name += " (best baseline)"
        if m == recommended:
            name += " — recommended for this run"
        cells = [
            f"{frame.loc[m, (s, 'auroc')]:.2f} / {frame.loc[m, (s, 'fpr95')]:.2f}"
            for s in [*sets, "mean"]
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"ID test accuracy {run.report['id_accuracy']:.2f} %. All methods: `nero report runs/demo`."
    )
    return "\n".join(lines)


def section(path: Path, name: str) -> str | None:
    """The block between ``<!-- NAME -->`` and ``<!-- /NAME -->`` of a results file."""
    if not path.is_file():
        return None
    found = re.search(rf"<!-- {name} -->\n(.*?)\n<!-- /{name} -->", path.read_text(), re.S)
    return found.group(1) if found else None


def ablation_table(path: Path) -> str | None:
    """The models line and the preset / best-baseline rows of the ablation's AUROC table."""
    if not path.is_file():
        return None
    text = path.read_text()
    models = re.search(r"^Models: .*?;", text, re.M)
    table = re.search(r"## AUROC on the demo's OOD kinds \(test\)\n\n(.*?)\n\n", text, re.S)
    if not (models and table):
        return None
    lines = table.group(1).splitlines()
    keep = ("reference preset", "default preset", "best baseline")
    rows = [line for line in lines[2:] if line.split("|")[1].strip().startswith(keep)]
    return "\n".join(
        [f"{models.group(0)[:-1]}; AUROC %, mean ± std over the models.", "", *lines[:2], *rows]
    )


def replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no <!-- {name}:start --> … <!-- {name}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args()
    text = args.readme.read_text()
    text = replace(text, "demo-table", demo_table(args.demo))
    ablation = ablation_table(RESULTS / "ablation.md")
    if ablation is None:
        print("ablation-table: no bench/results/ablation.md (run bench/ablation.py); left as is")
    else:
        text = replace(text, "ablation-table", ablation)
    for name, source in (
        ("real-detection", RESULTS / "real_data.md"),
        ("real-localisation", RESULTS / "real_data.md"),
        ("demo-localisation", RESULTS / "real_data.md"),
        ("select-table", RESULTS / "select_default.md"),
        ("scale-table", RESULTS / "scale.md"),
        ("proxy-agreement", RESULTS / "proxy_agreement.md"),
        ("frame-invariance", RESULTS / "frame_invariance.md"),
        ("conformal", RESULTS / "conformal.md"),
        ("demo-reproducibility", RESULTS / "demo_reproducibility.md"),
        ("dashboard-speed", RESULTS / "dashboard.md"),
        ("dashboard-speed-real", RESULTS / "dashboard_real.md"),
        ("clinician-walk", RESULTS / "clinician_walk.md"),
    ):
        body = section(source, name)
        if body is None:
            print(f"{name}: no section in {source} (run the bench that writes it); left as is")
            continue
        text = replace(text, name, body)
    args.readme.write_text(text)
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
