"""The Ray engine makes the run the local engine makes (a local Ray with 2 CPUs)."""

import numpy as np
import pandas as pd
import pytest

from nero.cli import main
from nero.explain.envelope import ENVELOPE_FILE, Envelope
from nero.explain.kinds import HEATMAP_DIR
from nero.run.batches import read_batch
from nero.run.directory import read_run
from tests.helpers import evaluate_args, make_folders, tiny_checkpoint

ray = pytest.importorskip("ray")
METHODS = "nero,msp,knn,vim"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 2**20,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def two_runs(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    data = make_folders(root / "data", n_train=12, n_test=6)
    ckpt = tiny_checkpoint(root / "model.pt")
    runs = {}
    for engine in ("local", "ray"):
        runs[engine] = root / engine
        args = ["--model", str(ckpt), "--methods", METHODS, "--batch-size", "8"]
        with pytest.warns(UserWarning):  # the broken JPEG, the grey images
            assert main(evaluate_args(data, runs[engine], *args, "--engine", engine)) == 0
    return data, read_run(runs["local"]), read_run(runs["ray"])


def test_ray_engine_makes_the_local_engines_run(two_runs):
    _, local, on_ray = two_runs
    pd.testing.assert_frame_equal(local.samples, on_ray.samples)
    for name in ("features", "logits", "relevance"):
        np.testing.assert_allclose(getattr(on_ray, name), getattr(local, name), atol=1e-5)
    for method in METHODS.split(","):
        np.testing.assert_allclose(on_ray.scores[method], local.scores[method], atol=1e-5)
    assert local.manifest["data"]["unreadable"] == on_ray.manifest["data"]["unreadable"] != {}
    envelopes = [Envelope.load(r.path / HEATMAP_DIR / ENVELOPE_FILE) for r in (local, on_ray)]
    np.testing.assert_array_equal(envelopes[0].counts, envelopes[1].counts)
    assert envelopes[0].points == envelopes[1].points
    for point in envelopes[0].points:
        np.testing.assert_allclose(
            envelopes[1].maxima[point], envelopes[0].maxima[point], atol=1e-5
        )


def test_score_on_ray_equals_local_score_in_input_order(two_runs, capsys):
    data, local, _ = two_runs
    inputs = [str(data / "id_test"), str(data / "ood" / "noise")]
    for engine in ("local", "ray"):
        args = ["score", "--run", str(local.path), *inputs, "--into", f"on-{engine}"]
        assert main([*args, "--engine", engine, "--batch-size", "4"]) == 0
    assert "broken.jpg" in capsys.readouterr().err
    run = read_run(local.path)
    here, there = read_batch(run, "on-local"), read_batch(run, "on-ray")
    assert list(there["path"]) == list(here["path"])  # the order of the inputs
    for method in METHODS.split(","):
        # float32 features equal to ~1e-7 relative; scores in the thousands differ by as much
        np.testing.assert_allclose(there[method], here[method], rtol=1e-5, atol=1e-5)
    assert list(there["verdict"]) == list(here["verdict"])


def test_address_without_ray_engine_is_refused(two_runs, capsys):
    data, local, _ = two_runs
    args = ["score", "--run", str(local.path), str(data / "id_test"), "--address", "auto"]
    assert main(args) == 2
    assert "--engine ray" in capsys.readouterr().err
