"""`nero demo --quick` end to end: data, model, run with masks; a second call reuses it."""

from nero.cli import main
from nero.run import read_run


def test_quick_demo_builds_a_valid_run_and_reuses_it(tmp_path, capsys):
    out = tmp_path / "runs" / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    run = read_run(out)
    assert run.class_names == ["cecum", "pylorus", "z-line"]
    assert {"polyp", "blue-dye", "bleeding", "instrument", "non-endoscopy"} <= set(run.ood_sets)
    masks = run.samples["mask"]
    near = run.samples["split"].isin([f"ood:{k}" for k in ("polyp", "blue-dye", "bleeding")])
    assert (masks[near] != "").all()
    assert (masks[run.samples["split"] == "ood:non-endoscopy"] == "").all()
    assert {"nero", "msp", "energy"} <= set(run.methods)
    assert (tmp_path / "runs" / ".demo-model" / "resnet18.pt").is_file()
    capsys.readouterr()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert "already built" in capsys.readouterr().out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
