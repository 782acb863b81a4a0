"""End to end through the command line: generated images + a tiny random model → a valid run."""

import json
import shutil

import numpy as np
import pytest
import torch

from nero.cli import main
from nero.detect.relevance import head_relevance
from nero.model.classifier import head_arrays, load_classifier
from nero.run.directory import RunFormatError, read_run
from nero.run.heatmap_scale import SCALE_FILE
from tests.helpers import evaluate_args, make_folders, tiny_checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_evaluate_prepared_layout_writes_valid_run(folders, checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "evaluate",
            "--model",
            str(checkpoint),
            "--arch",
            "resnet18",
            "--data",
            str(folders),
            "--img-size",
            "32",
            "--methods",
            "nero,msp,energy",
            "--out",
            str(out),
            "--batch-size",
            "8",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "noise AUROC" in printed and "run written to" in printed
    run = read_run(out)
    n = 2 * 10 + 2 * 5 + 6 + 4  # the broken JPEG is skipped
    assert len(run.samples) == n
    assert run.features.shape == (n, 512) and run.relevance.shape == (n, 513)
    assert run.logits.shape == (n, 2)
    # relevance.npy is the spec's head relevance with the preset's ε, from the stored features
    head = head_arrays(load_classifier("resnet18", checkpoint, 2, 32).head)
    expected = head_relevance(run.features, head, run.manifest["nero"]["epsilon"])
    np.testing.assert_allclose(run.relevance, expected, rtol=1e-4, atol=1e-6)
    assert set(run.samples["split"]) == {"id_train", "id_test", "ood:noise", "ood:gray"}
    assert (run.samples.loc[run.samples.split.str.startswith("ood"), "label"] == -1).all()
    assert run.methods == ["nero", "msp", "energy", "fusion"]  # fusion: chosen from ID data
    # fusion is ranked by the recommendation like any method, from the same ID-only proxies
    assert set(run.recommendation.ranking) == {"nero", "msp", "energy", "fusion"}
    assert run.manifest["fusion"]["members"] == run.report["fusion"]["members"]
    assert set(run.report["results"]) == {"noise", "gray"}
    assert set(run.report["results"]["noise"]["nero"]) == {"auroc", "fpr95", "aupr_in", "aupr_out"}
    assert list(run.manifest["data"]["unreadable"]) == [str(folders / "ood/noise/broken.jpg")]
    assert run.manifest["model"]["checkpoint_sha256"] and run.manifest["preset"] == "default"
    # the stored scores are the detector's: reload and rescore
    np.testing.assert_allclose(
        run.detector.score(run.features, run.relevance), run.scores["nero"], rtol=1e-6
    )
    # prediction column is the argmax of the stored logits
    np.testing.assert_array_equal(run.samples["pred"], np.asarray(run.logits).argmax(1))
    assert not (tmp_path / "run.incomplete").exists()
    assert (out / "embedding.npy").is_file()  # the dashboard's map is ready
    assert (out / "heatmaps" / SCALE_FILE).is_file()  # and the heatmaps' colour scale


def test_evaluate_explicit_folders_and_report_formats(folders, tmp_path, capsys):
    out = tmp_path / "run2"
    code = main(
        [
            "evaluate",
            "--no-embedding",
            "--no-heatmap-scale",
            "--arch",
            "resnet18",
            "--id-train",
            str(folders / "id_train"),
            "--id-test",
            str(folders / "id_test"),
            "--ood",
            f"n={folders / 'ood/noise'}",
            "--img-size",
            "32",
            "--preset",
            "reference",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    run = read_run(out)
    assert run.ood_sets == ["n"] and run.manifest["nero"]["norm_neurons"] == 175
    np.testing.assert_allclose(run.relevance.sum(axis=1), 1.0, atol=1e-4)  # LRP-0 conserves
    assert (out / "model.safetensors").is_file()  # random weights kept for heatmaps
    capsys.readouterr()
    main(["report", str(out), "--format", "csv"])
    assert capsys.readouterr().out.startswith("method,n/auroc")
    main(["report", str(out), "--format", "markdown"])
    assert "| nero |" in capsys.readouterr().out


def test_class_mismatch_and_bad_args_fail_cleanly(folders, checkpoint, tmp_path, capsys):
    three = tmp_path / "three"
    shutil.copytree(folders, three)
    shutil.copytree(three / "id_train" / "beta", three / "id_train" / "gamma")
    shutil.copytree(three / "id_test" / "beta", three / "id_test" / "gamma")
    code = main(evaluate_args(three, tmp_path / "r", "--model", str(checkpoint)))
    assert code == 2
    assert "2-class head but the data has 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    code = main(evaluate_args(folders, tmp_path / "r", "--methods", "nero,bogus"))
    assert code == 2 and "unknown method(s) ['bogus']" in capsys.readouterr().err


def test_reader_names_what_is_wrong(folders, tmp_path):
    out = tmp_path / "run3"
    assert main(evaluate_args(folders, out)) == 0
    np.save(out / "logits.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(RunFormatError, match=r"logits.npy has shape \(3, 2\)"):
        read_run(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFormatError, match="format_version 99"):
        read_run(out)
    (out / "scores.csv").unlink()
    with pytest.raises(RunFormatError, match=r"missing \['scores.csv'\]"):
        read_run(out)


def test_failure_after_extraction_keeps_and_reuses_the_forward_pass(
    folders, tmp_path, capsys, monkeypatch
):
    import nero.detect.nero_methods as nero_methods
    import nero.run.pipeline as pipeline

    out = tmp_path / "run4"
    args = evaluate_args(folders, out)
    real_fit = nero_methods.NeroMethod.fit

    def boom(self, *a, **k):
        raise RuntimeError("simulated crash while fitting")

    monkeypatch.setattr(nero_methods.NeroMethod, "fit", boom)
    assert main(args) == 2
    stage = tmp_path / "run4.incomplete"
    assert (stage / "features.npy").is_file() and not out.exists()
    monkeypatch.setattr(nero_methods.NeroMethod, "fit", real_fit)

    def no_second_pass(*a, **k):
        raise AssertionError("the forward pass ran again")

    monkeypatch.setattr(pipeline, "extract", no_second_pass)
    assert main(args) == 0  # same seed → same random model → the saved pass is reused
    assert read_run(out).features.shape[0] == 40 and not stage.exists()


def test_run_without_nero_method_still_holds_the_detector(folders, tmp_path):
    out = tmp_path / "run5"
    assert main(evaluate_args(folders, out, "--methods", "msp,odin")) == 0
    run = read_run(out)
    assert run.methods == ["msp", "odin"] and run.detector.centroids_.shape[0] == 2
    # every method's parameters are in the manifest, from its get_params()
    assert run.manifest["method_params"] == {
        "msp": {},
        "odin": {"temperature": 100.0, "epsilon": 0.0005, "norm_std": None},
    }


def test_reference_method_equals_a_reference_preset_run(folders, tmp_path):
    out = tmp_path / "run6"
    args = ("--preset", "reference", "--methods", "nero,nero_reference")
    assert main(evaluate_args(folders, out, *args)) == 0
    run = read_run(out)
    np.testing.assert_allclose(run.scores["nero_reference"], run.scores["nero"], rtol=1e-5)
    params = run.manifest["method_params"]
    assert params["nero"] == run.detector.get_params() == params["nero_reference"]


def test_extraction_on_cuda_uses_true_float32_and_restores_the_setting():
    from nero.model.device import exact_float32

    before = torch.backends.cudnn.allow_tf32
    with exact_float32(torch.device("cuda")):  # a flag only: checkable without a GPU
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 == before
    with exact_float32(torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32 == before


def test_inputs_too_small_for_an_envelope_still_give_a_run(folders, tmp_path):
    out = tmp_path / "run7"
    with pytest.warns(UserWarning, match="no training envelope"):
        assert main(evaluate_args(folders, out, "--img-size", "8", "--methods", "msp")) == 0
    assert read_run(out).manifest["img_size"] == 8
    assert not (out / "heatmaps" / "envelope.npz").exists()
