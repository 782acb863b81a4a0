"""`nero demo --quick` end to end: data, model, run with masks; a second call reuses it."""

import dataclasses
from pathlib import Path

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
