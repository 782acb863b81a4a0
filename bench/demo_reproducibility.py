"""Does `nero demo` give the same figures on every x86-64 CPU? Simulated on this one.

    python bench/demo_reproducibility.py [--work runs/.bench-repro] [--variants NAME,...]

Builds the demo from scratch (data, model, run) in a fresh subprocess per variant, each
with the math libraries held to one instruction set, the way another CPU would run them:

- ``native``: this machine's own code paths;
- ``avx2``: numpy without its AVX-512 kernels, ATen's vector kernels, oneDNN's convolutions,
  MKL and OpenBLAS held to AVX2 (what an AVX2-only machine runs);
- ``avx2-1thread``: the same on one thread (a 1-core machine).

For each it records the sha256 of the generated images, of the trained weights and of
report.json's figures, and the demo table's mean AUROCs; then says which variants agree
bit for bit. Writes bench/results/demo_reproducibility.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "demo_reproducibility.md"
AVX2 = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}
VARIANTS = {
    "native": {},
    "avx2": AVX2,
    "avx2-1thread": {**AVX2, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}
SHOWN = ("msp", "nero_reference", "nero", "mahalanobis", "vim", "fusion")


def digest_files(folder: Path, pattern: str) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob(pattern)):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def build(name: str, env: dict[str, str], work: Path) -> dict:
    out = work / name / "demo"
    shutil.rmtree(work / name, ignore_errors=True)
    out.parent.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "nero"), "demo", "--out", str(out)],
        env={**os.environ, **env}, check=True, capture_output=True,
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    means = {
        m: round(sum(report["results"][s][m]["auroc"] for s in report["results"])
                 / len(report["results"]), 2)
        for m in SHOWN if m in next(iter(report["results"].values()))
    }  # fmt: skip
    figures = json.dumps(report["results"], sort_keys=True).encode()
    return {
        "seconds": time.perf_counter() - start,
        "data": digest_files(out.parent / ".demo-data", "*.png"),
        "weights": digest_files(out.parent / ".demo-model", "*.pt"),
        "report": hashlib.sha256(figures).hexdigest()[:12],
        "accuracy": report["id_accuracy"],
        "means": means,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / ".bench-repro")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = {}
    for name in args.variants.split(","):
        results[name] = build(name, VARIANTS[name], args.work)
        print(name, results[name], flush=True)
    methods = list(next(iter(results.values()))["means"])
    lines = [
        "# Is the demo the same on every CPU?",
        "",
        "<!-- demo-reproducibility -->",
        "Measured by `python bench/demo_reproducibility.py` on one machine, each variant a "
        "fresh build (data, model, run) with the math libraries held to one instruction set.",
        "",
        "| variant | images | weights | report | ID accuracy | "
        + " | ".join(f"{m} mean AUROC" for m in methods) + " |",
        "|---" * (5 + len(methods)) + "|",
    ]  # fmt: skip
    for name, r in results.items():
        lines.append(
            f"| {name} | `{r['data']}` | `{r['weights']}` | `{r['report']}` | "
            f"{r['accuracy']:.2f} % | " + " | ".join(f"{r['means'][m]:.2f}" for m in methods)
            + " |"
        )  # fmt: skip
    same = len({r["report"] for r in results.values()}) == 1
    lines += [
        "",
        "All variants give the same report, bit for bit."
        if same
        else "The variants do **not** agree bit for bit: the demo's figures depend on the CPU "
        "(see the columns above for where they part).",
        "<!-- /demo-reproducibility -->",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
