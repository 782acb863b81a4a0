"""Training writes a checkpoint and sidecar that `nero evaluate` loads without repeating flags."""

import json

import numpy as np

from nero.cli import main
from nero.model.train import stratified_split
from nero.run.directory import read_run
from tests.helpers import make_folders


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = np.repeat([0, 1, 2], [10, 20, 5])
    tr, va = stratified_split(labels, 0.2, seed=42)
    tr2, va2 = stratified_split(labels, 0.2, seed=42)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not set(tr) & set(va) and len(tr) + len(va) == labels.size
    assert np.bincount(labels[va]).tolist() == [2, 4, 1]


def test_train_one_epoch_then_evaluate_through_sidecar(tmp_path, capsys):
    data = make_folders(tmp_path / "data", n_train=6, n_test=3)
    ckpt = tmp_path / "model.pt"
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--arch",
            "resnet18",
            "--epochs",
            "1",
            "--img-size",
            "32",
            "--batch-size",
            "4",
            "--out",
            str(ckpt),
        ]
    )
    assert code == 0 and ckpt.is_file()
    sidecar = json.loads(ckpt.with_suffix(".json").read_text())
    assert sidecar["arch"] == "resnet18" and sidecar["class_names"] == ["alpha", "beta"]
    assert sidecar["img_size"] == 32 and len(sidecar["history"]) == 1
    # no --arch / --img-size: both come from the sidecar
    out = tmp_path / "run"
    assert (
        main(
            [
                "evaluate",
                "--no-embedding",
                "--no-heatmap-scale",
                "--model",
                str(ckpt),
                "--data",
                str(data),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    run = read_run(out)
    assert run.manifest["img_size"] == 32 and run.manifest["model"]["arch"] == "resnet18"
    assert run.manifest["model"]["checkpoint"] == str(ckpt)
