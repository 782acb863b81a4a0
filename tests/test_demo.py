"""`nero demo --quick` end to end: data, model, run with masks; a second call reuses it."""

import dataclasses
from pathlib import Path

import pytest

from nero.cli import main
from nero.demo import QUICK, build_demo
from nero.run.directory import read_run


def test_quick_demo_builds_a_valid_run_and_reuses_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = Path("runs") / "demo"  # relative, as `nero demo` is mostly run
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    run = read_run(out)
    assert run.class_names == ["cecum", "pylorus", "z-line"]
    assert {"polyp", "blue-dye", "bleeding", "instrument", "non-endoscopy"} <= set(run.ood_sets)
    masks = run.samples["mask"]
    near = run.samples["split"].isin([f"ood:{k}" for k in ("polyp", "blue-dye", "bleeding")])
    assert (masks[near] != "").all()
    # mask paths are absolute, like image paths: the run reads the same from any directory
    assert all(Path(m).is_absolute() and Path(m).is_file() for m in masks[near])
    assert (masks[run.samples["split"] == "ood:non-endoscopy"] == "").all()
    assert {"nero", "msp", "energy"} <= set(run.methods)
    assert (tmp_path / "runs" / ".demo-model" / "resnet18.pt").is_file()
    capsys.readouterr()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert "already built" in capsys.readouterr().out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    # Another recipe on the same data (as bench/heatmaps.py --native does): a new model at
    # its own input size, the data reused, the demo run untouched.
    data = tmp_path / "runs" / ".demo-data"
    data_stamp = (data / "manifest.json").stat().st_mtime_ns
    other = dataclasses.replace(QUICK, train=dataclasses.replace(QUICK.train, img_size=48))
    native = build_demo(tmp_path / "native" / "run", data_dir=data, recipe=other, verbose=False)
    assert read_run(native).manifest["img_size"] == 48
    assert (tmp_path / "native" / ".run-model" / "resnet18.pt").is_file()
    assert (data / "manifest.json").stat().st_mtime_ns == data_stamp
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_the_pinned_build_gives_the_same_model_and_report_whatever_the_cpu_settings(tmp_path):
    """The demo's pinned child (``python -m nero.demo``, as ``nero demo`` starts it) under a
    user's environment that asks for AVX-512 kernels and under one core: the same weights
    and the same report, bit for bit."""
    import hashlib
    import json
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    from nero.demo import PINNED_CODE_PATHS, PINNED_MARK, cpu_runs_pinned_paths

    if not cpu_runs_pinned_paths():
        pytest.skip("this CPU has no AVX2/FMA: the demo is built on its own code paths")
    asks_avx512 = {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
                   "NPY_DISABLE_CPU_FEATURES": ""}  # fmt: skip
    one_core = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    built = []
    for name, user_env, prefix in (("avx512", asks_avx512, []), ("one-core", {}, one_core)):
        out = tmp_path / name / "demo"
        env = {**os.environ, **user_env, **PINNED_CODE_PATHS, PINNED_MARK: "1"}
        child = ["-m", "nero.demo", "--out", str(out), "--quick", "--no-map"]
        command = [*prefix, sys.executable, *child]
        subprocess.run(command, env=env, check=True, capture_output=True)
        weights = (out.parent / ".demo-model" / "resnet18.pt").read_bytes()
        report = json.loads((out / "report.json").read_text())
        built.append((hashlib.sha256(weights).hexdigest(), json.dumps(report["results"])))
    assert built[0] == built[1]


def test_the_pin_holds_mkl_to_the_branch_every_vendors_cpu_runs():
    """MKL ignores an ISA branch on another vendor's CPU and dispatches by the CPU; the
    COMPATIBLE branch is the one Intel and AMD CPUs both run (MKL's own report says which)."""
    import os
    import subprocess
    import sys

    import torch

    from nero.demo import PINNED_CODE_PATHS

    if not torch.backends.mkl.is_available():
        pytest.skip("this torch has no MKL")
    probe = "import torch; torch.ones(8, 8) @ torch.ones(8, 8)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **PINNED_CODE_PATHS, "MKL_VERBOSE": "1"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "CNR:COMPATIBLE,STRICT" in done.stdout + done.stderr
