"""Does `nero demo` give the same figures on every x86-64 CPU? Simulated on this one.

    python bench/demo_reproducibility.py [--work runs/.bench-repro] [--variants NAME,...]

Builds the demo from scratch (data, model, run) in a fresh subprocess per variant:

- ``as built``: ``nero demo`` as a user runs it (it pins its own math libraries' code paths:
  ``nero.demo.PINNED_CODE_PATHS``);
- ``one core``: the whole build on one core (``taskset``), as on a 1-core machine;
- ``AVX-512 asked for``: the user's environment asking numpy, ATen and oneDNN for AVX-512
  (what an unpinned build on this AVX-512 machine runs).

For each it records the sha256 of the generated images, of the trained weights and of
report.json's figures, and the demo table's mean AUROCs; then says which variants agree
bit for bit. Writes bench/results/demo_reproducibility.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import results_io

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "demo_reproducibility.md"
# `nero demo` pins its own code paths (nero.demo.PINNED_CODE_PATHS); what the variants change
# is everything around it: numpy's kernels (not pinned), the cores it gets, what the user's
# environment asks for.
VARIANTS: dict[str, dict[str, str]] = {
    "as built": {},
    "one core": {"TASKSET": "0"},
    "AVX-512 asked for": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "NPY_DISABLE_CPU_FEATURES": "",
    },
}
SHOWN = ("msp", "nero_reference", "nero", "mahalanobis", "vim", "fusion")


def cpu_model() -> str:
    """The CPU's model name and its widest vector extensions (what the kernels could pick)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), "CPU unknown")  # fmt: skip
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                      if ln.startswith("flags")), []))  # fmt: skip
    wide = [f for f in ("avx2", "avx512f", "avx512_fp16", "amx_tile") if f in flags]
    return f"{name}; {', '.join(wide) or 'no AVX2'}"


def mkl_branch() -> str:
    """The code branch MKL reports it runs under the demo's pin on this CPU (``MKL_VERBOSE``):
    a branch MKL cannot take here falls back to dispatching by the CPU ("AUTO")."""
    from nero.demo import PINNED_CODE_PATHS

    probe = "import torch; torch.ones(8, 8) @ torch.ones(8, 8)"
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", probe],
        env={**os.environ, **PINNED_CODE_PATHS, "MKL_VERBOSE": "1"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"CNR:(\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "not reported"


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
    env = dict(env)
    prefix = ["taskset", "-c", env.pop("TASKSET")] if "TASKSET" in env else []
    subprocess.run(
        [*prefix, str(ROOT / ".venv" / "bin" / "nero"), "demo", "--out", str(out)],
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
        "data": digest_files(out.parent / ".demo-data", "*.*g"),  # JPEG images, PNG masks
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
        "Measured by `python bench/demo_reproducibility.py` on one machine "
        f"({cpu_model()}; MKL's branch under the pin: {mkl_branch()}), each variant a fresh "
        "build (data, model, run).",
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
    results_io.publish_result(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
