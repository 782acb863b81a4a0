"""Every dashboard page under AppTest: it renders, reacts, and never shows a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import heatmap_jobs
from dashboard import vega_charts as vega_charts_module
from nero.run.directory import read_run
from tests.dashboard_fixtures import TINY_RUN, runs_root, tiny_data, tiny_run  # noqa: F401

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
TIMEOUT = 120


def open_app(root: Path, view: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if view:
        at.query_params["view"] = view
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


@pytest.fixture(autouse=True)
def _runs_root(monkeypatch: pytest.MonkeyPatch, runs_root: Path) -> None:  # noqa: F811
    monkeypatch.setenv("NERO_RUNS_ROOT", str(runs_root))
    monkeypatch.delenv("NERO_RUN", raising=False)


@pytest.fixture(autouse=True)
def _no_maps_from_other_tests() -> None:
    """Each test starts without the maps earlier tests' pages started or prepared ahead (the
    worker and its results are process-wide, as in a server)."""
    with heatmap_jobs._STARTED_LOCK:
        heatmap_jobs._STARTED.clear()
        heatmap_jobs._COLLECTED.clear()
        heatmap_jobs._AHEAD[0] = frozenset()
    heatmap_jobs._heatmaps.clear()
    heatmap_jobs.neuron_heatmap.clear()


def own_copy(source: Path, root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny run, alone in a runs root the dashboard is pointed at."""
    shutil.copytree(source, root / name)
    monkeypatch.setenv("NERO_RUNS_ROOT", str(root))
    return root / name


def ok(at: AppTest) -> None:
    """No exception element and no error box on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def vega_charts(at: AppTest) -> list[dict]:
    """The page's Vega-Lite specs (the overview's histogram and ROC)."""
    return [json.loads(el.proto.spec) for el in at.get("vega_lite_chart")]


def x_title(spec: dict) -> str:
    """A layered Vega-Lite chart's x-axis title (its first layer's)."""
    return spec["layer"][0]["encoding"]["x"]["title"]


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    return "\n".join(parts + [i.value for i in at.info] + [w.value for w in at.warning])


# ---------------------------------------------------------------- overview
def test_overview_threshold_slider_changes_the_rates(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "overview")
    ok(at)
    assert at.title[0].value == "Overview"
    before = metric(at, "OOD caught"), metric(at, "ID flagged")
    slider = at.slider[0]
    slider.set_value(slider.min).run()
    ok(at)
    after = metric(at, "OOD caught"), metric(at, "ID flagged")
    assert after != before
    # at the lowest score, every OOD image scoring above it is flagged
    run = read_run(runs_root / TINY_RUN)
    nero_scores = run.scores["nero"].to_numpy()
    ood = run.samples["split"].str.startswith("ood:").to_numpy()
    lowest = nero_scores[ood | (run.samples["split"] == "id_test").to_numpy()].min()
    assert after[0] == f"{100 * np.mean(nero_scores[ood] > lowest):.1f} %"
    assert at.query_params["run"] == TINY_RUN and "threshold" in at.query_params


def test_overview_method_selector_changes_the_histogram(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "overview")
    at.selectbox[0].select("nero").run()  # whatever the run recommends
    hist, roc = vega_charts(at)
    assert x_title(hist).startswith("NERO score") and "false positive rate" in x_title(roc)
    at.segmented_control(key="hist-axis::tiny::nero").set_value("log").run()
    assert x_title(vega_charts(at)[0]).startswith("log₁₀ NERO score")
    at.segmented_control(key="hist-axis::tiny::nero").set_value("percentile").run()
    at.selectbox[0].select("msp").run()
    ok(at)
    changed = vega_charts(at)[0]
    assert x_title(changed).startswith("MSP score")  # each method keeps its own axis choice
    domain = changed["layer"][0]["encoding"]["x"]["scale"]["domain"]
    assert domain != hist["layer"][0]["encoding"]["x"]["scale"]["domain"]


def test_overview_marks_the_best_method_and_offers_exports(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "overview")
    frame = at.dataframe[1].value
    assert {"NERO", "MSP", "Energy"} <= set(frame.index)
    assert any("AUROC" in c for c in frame.columns)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Scores (CSV)", "Report (JSON)"]


# ---------------------------------------------------------------- relevance map
def map_samples(at: AppTest) -> pd.DataFrame:
    """The samples the Vega-Lite map draws (its one named dataset, sent as Arrow)."""
    import pyarrow as pa

    (dataset,) = at.get("vega_lite_chart")[0].proto.datasets
    return pa.ipc.open_stream(dataset.data.data).read_pandas()


def test_map_draws_samples_and_centroids(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "map", sample="5")
    ok(at)
    spec = vega_charts(at)[0]
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks[:2] == ["circle", "point"] and marks[-1] == "point"  # samples, stars, ring
    stars = spec["layer"][1]["data"]["values"]
    assert {s["label"] for s in stars} == set(read_run(runs_root / TINY_RUN).class_names)
    ring = spec["layer"][-1]["data"]["values"][0]
    dots = map_samples(at)
    five = dots[dots["index"] == 5].iloc[0]
    assert (ring["x"], ring["y"]) == pytest.approx((five["x"], five["y"]))
    assert {"ID train", "ID test", "OOD: noise", "OOD: blue"} <= set(dots["group"])
    assert five["sample"] == "#5" and "predicted" in five["classes"]
    at.segmented_control(key="map-colour").set_value("Score").run()
    ok(at)
    colour = vega_charts(at)[0]["layer"][0]["encoding"]["color"]
    assert colour["type"] == "quantitative" and "value" in map_samples(at)
    at.pills(key=f"map-splits::{TINY_RUN}").set_value(["id_test"]).run()
    ok(at)
    assert len(map_samples(at)) == 12  # the ID test samples only
    at.toggle(key="map-lasso").set_value(True).run()  # free-hand selection: the Plotly map
    ok(at)
    assert "colorbar" in json.dumps(charts(at)[0]["data"][0])
    assert len(charts(at)[0]["data"][0]["text"]) == 12


def test_map_without_embedding_offers_to_compute_it(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "runs"
    bare = own_copy(tiny_run, root, "bare", monkeypatch)
    for name in ("embedding.npy", "embedding_centroids.npy", "embedding.json"):
        (bare / name).unlink()
    import nero.run.embedding

    real = nero.run.embedding.ensure_embedding
    monkeypatch.setattr(nero.run.embedding, "ensure_embedding", lambda p: real(p, method="pca"))
    at = open_app(root, "map")
    ok(at)
    assert "not been computed" in texts(at)
    at.button(key="compute-map").click().run()
    ok(at)
    assert vega_charts(at)[0]["layer"][1]["mark"]["shape"] == vega_charts_module.STAR


# ---------------------------------------------------------------- inspector
def test_inspector_explains_the_sample_from_the_url(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "inspector", sample="30")
    ok(at)
    assert at.number_input[0].value == 30
    assert "#30" in texts(at)
    assert {"Distance to nearest centroid", "Bias term", "Norm ratio (not used)"} <= {
        m.label for m in at.metric
    }
    assert any("centroid of" in json.dumps(c) for c in vega_charts(at))  # the neuron bars
    assert at.query_params["sample"] == "30"
    heatmap_pngs = [b for b in at.get("download_button") if b.proto.label == "Heatmap (PNG)"]
    assert len(heatmap_pngs) == 2
    assert "ResNetCanonizer + envelope gate" in texts(at)  # the OOD heatmap, gated


def test_inspector_draws_an_ood_map_without_evidence_as_nothing_unusual(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nero.run.heatmap_scale import calibration_rows, evidence
    from nero.run.heatmaps import run_heatmap, run_heatmap_scale

    run = read_run(own_copy(tiny_run, tmp_path / "runs", "scaled", monkeypatch))
    scale = run_heatmap_scale(run)  # what nero evaluate stores
    rows = calibration_rows(run)
    quiet = int(
        rows[np.argmin([evidence(run_heatmap(run, int(i), "ood").relevance) for i in rows])]
    )
    at = open_app(tmp_path / "runs", "inspector", sample=str(quiet))
    ok(at)
    assert any("No unusual evidence" in box.value for box in at.success)
    assert "the run's scale" in texts(at)  # the class map is drawn on the run's colour scale
    assert scale.pixel("class") > 0


def test_inspector_heatmap_failure_is_a_message_not_a_traceback(
    runs_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nero.run import heatmaps

    def broken(*_args, **_kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(heatmaps.RunHeatmaps, "sample", broken)
    at = open_app(runs_root, "inspector", sample="5")
    ok(at)
    warnings = [w.value for w in at.warning]
    # both heatmap panels and the deviating neuron's heatmap say so
    assert sum("could not be computed: disk on fire" in w for w in warnings) == 3
    assert "Closest training images" in [h.value for h in at.subheader]  # the rest is there


def test_inspector_quick_picks_and_number_input_switch_samples(
    runs_root: Path,  # noqa: F811
) -> None:
    at = open_app(runs_root, "inspector", sample="2")
    at.button(key="quick-Most OOD-like image").click().run()
    ok(at)
    first = at.number_input[0].value
    assert first != 2
    at.number_input[0].set_value(7).run()
    ok(at)
    assert "#7" in texts(at) and at.query_params["sample"] == "7"


def test_inspector_without_heatmaps_says_so(
    runs_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dashboard import heatmap_jobs

    monkeypatch.setattr(heatmap_jobs, "heatmaps_module", lambda: None)
    at = open_app(runs_root, "inspector", sample="3")
    ok(at)
    assert "Heatmaps are unavailable" in texts(at)


# ---------------------------------------------------------------- score a new image
def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_score_page_scores_and_explains_an_upload(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "score")
    ok(at)
    assert "Nothing uploaded yet" in texts(at)
    at.file_uploader[0].set_value(("red.png", png((200, 60, 60)), "image/png")).run()
    ok(at)
    summary = at.dataframe[0].value
    assert list(summary["image"]) == ["red.png"]
    assert summary["verdict"].iat[0] in {
        "Looks in-distribution",
        "Borderline",
        "Out-of-distribution",
    }
    assert "Norm ratio (not used)" in {m.label for m in at.metric}  # the default preset
    assert "ResNetCanonizer + envelope gate" in texts(at)  # the run's envelope gates it
    at.toggle(key="compare").set_value(True).run()
    ok(at)
    others = at.dataframe[1].value
    # every method the run can score new images with, and its fusion of them
    assert set(others["method"]) == {
        "NERO", "MSP", "Energy", "MaxLogit", "KNN", "Fusion (calibrated p-values)"
    }  # fmt: skip


def test_score_page_bad_uploads_get_a_message_not_a_traceback(
    runs_root: Path,  # noqa: F811
) -> None:
    at = open_app(runs_root, "score")
    truncated = png((10, 20, 30))[:60]
    at.file_uploader[0].set_value(
        [
            ("notes.png", b"this is not an image at all", "image/png"),
            ("cut.png", truncated, "image/png"),
            ("empty.jpg", b"", "image/jpeg"),
        ]
    ).run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "notes.png" in messages and "not an image" in messages
    assert "cut.png" in messages and "empty.jpg" in messages
    assert not at.dataframe  # nothing scored


def test_score_page_refuses_a_replaced_model_naming_both_hashes(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch
    from safetensors.torch import save_model

    from nero.model.classifier import build_model

    root = tmp_path / "runs"
    swapped = own_copy(tiny_run, root, "swapped", monkeypatch)
    recorded = read_run(swapped).checkpoint_sha256
    torch.manual_seed(99)
    save_model(build_model("resnet18", 2, 32), str(swapped / "model.safetensors"))
    at = open_app(root, "score")
    at.file_uploader[0].set_value(("red.png", png((200, 60, 60)), "image/png")).run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "has changed since the run was made" in message and recorded in message
    assert not at.dataframe  # no verdict from the wrong weights


# ---------------------------------------------------------------- new run
def new_run_form(at: AppTest, name: str, data: str) -> AppTest:
    at.text_input(key="nr-name").set_value(name)
    at.text_input(key="nr-checkpoint").set_value("")
    at.text_input(key="nr-data").set_value(data)
    return at


def submit(at: AppTest) -> AppTest:
    return at.button(key="nr-submit").click().run()


def test_new_run_reports_every_bad_input(runs_root: Path, tmp_path: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "new-run")
    ok(at)
    submit(new_run_form(at, "bad name!", str(tmp_path)))
    assert not at.exception and "run name" in at.error[0].value
    submit(new_run_form(at, "fresh", str(tmp_path / "nowhere")))
    assert not at.exception and "does not exist" in at.error[0].value
    submit(new_run_form(at, TINY_RUN, str(tmp_path)))
    assert not at.exception and "exists" in at.error[0].value
    submit(new_run_form(at, "fresh", str(tmp_path)))  # not a prepared layout
    assert not at.exception and "id_train" in at.error[0].value
    at.text_input(key="nr-checkpoint").set_value(str(tmp_path / "missing.pt"))
    submit(at)
    assert not at.exception and "checkpoint" in at.error[0].value
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    at.text_input(key="nr-checkpoint").set_value(str(junk))
    at.text_input(key="nr-data").set_value(str(runs_root.parent))
    submit(at)
    assert not at.exception and at.error


@pytest.mark.filterwarnings("ignore:n_components")
def test_new_run_creates_a_run_and_opens_it(
    tmp_path: Path,
    tiny_data: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("NERO_RUNS_ROOT", str(root))
    import nero.run.embedding

    real = nero.run.embedding.ensure_embedding
    monkeypatch.setattr(nero.run.embedding, "ensure_embedding", lambda p: real(p, method="pca"))
    at = open_app(root, "new-run")
    new_run_form(at, "mine", str(tiny_data))
    at.number_input(key="nr-img-size").set_value(32)
    at.multiselect(key="nr-methods").set_value(["nero", "msp"])
    submit(at)
    ok(at)
    assert "created" in at.success[0].value
    assert (root / "mine" / "embedding.json").is_file()
    at = at.switch_page("views/overview.py").run()
    ok(at)
    assert at.selectbox(key="run_name").value == "mine"


# ---------------------------------------------------------------- runs, demo, URL safety
def test_a_demo_run_opened_from_elsewhere_is_not_offered_again(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`nero dashboard PATH/demo-copy`: its ID data lie in a demo data folder, so the sidebar
    does not say "Demo run not built yet"; another run still offers it, folded away."""
    import json

    copy = tmp_path / "elsewhere" / "demo-copy"
    shutil.copytree(tiny_run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["data"]["splits"]["id_train"]["root"] = "runs/.demo-data/id_train"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    root = tmp_path / "empty"
    root.mkdir()
    monkeypatch.setenv("NERO_RUNS_ROOT", str(root))
    monkeypatch.setenv("NERO_RUN", str(copy))
    at = open_app(root, "overview")
    ok(at)
    demo_builders = [e for e in at.expander if e.label == "The embedded demo run"]
    assert "Demo run not built yet" not in texts(at) and not demo_builders
    shutil.copytree(tiny_run, tmp_path / "other")
    monkeypatch.setenv("NERO_RUN", str(tmp_path / "other"))
    at = open_app(root, "overview")
    ok(at)
    assert [e.label for e in at.expander if e.label == "The embedded demo run"]


def test_empty_root_offers_the_demo_build(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    monkeypatch.setenv("NERO_RUNS_ROOT", str(root))
    import nero.demo

    calls = []

    def fake_build(out, progress=None, **_):
        progress("copying", 0.5)
        calls.append(out)
        shutil.copytree(tiny_run, out)
        return out

    monkeypatch.setattr(nero.demo, "build_demo", fake_build)
    at = open_app(root, "overview")
    ok(at)
    assert "No run is open yet" in texts(at)
    at.button(key="build-demo").click().run()
    ok(at)
    assert calls == [root / "demo"]
    assert at.session_state["run_name"] == "demo" and at.title[0].value == "Overview"


def test_a_broken_run_gives_an_error_message(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "runs"
    (own_copy(tiny_run, root, "broken", monkeypatch) / "scores.csv").unlink()
    for view in ("overview", "map", "inspector", "score"):
        at = open_app(root, view)
        assert not at.exception
        assert "cannot be read" in at.error[0].value


def test_url_names_runs_it_never_uses_as_paths(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "overview", run="../../etc", sample="3")
    ok(at)
    assert at.session_state["run_name"] == TINY_RUN
    said = " ".join(w.value for w in at.warning)
    assert "names the run “../../etc”, which is not here" in said and "not applied" in said
    assert "sample" not in at.query_params or at.query_params["sample"] != "3"
    for bad in ("not-a-number", "999999", "-5", "9" * 40, "²", "1e3", "3/../../0"):
        at = open_app(runs_root, "inspector", sample=bad)
        ok(at)
        assert at.title[0].value == "Sample inspector"
        assert f"sample “{bad}” is not a sample of run" in " ".join(w.value for w in at.warning)


def test_a_link_carries_method_threshold_and_ood_set(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "overview", method="msp", threshold="-0.5", set="noise")
    ok(at)
    assert at.selectbox(key="_w::method::tiny").value == "msp"
    assert at.selectbox(key="ood-set::tiny").value == "noise"
    assert at.query_params["method"] == "msp" and at.query_params["set"] == "noise"
    at = open_app(runs_root, "overview", method="bogus", threshold="abc")
    said = " ".join(w.value for w in at.warning)
    assert "method “bogus” is not in this run" in said and "threshold “abc” is not a number" in said
    for endless in ("nan", "inf", "-1e999"):
        at = open_app(runs_root, "overview", method="msp", threshold=endless)
        ok(at)
        said = " ".join(w.value for w in at.warning)
        assert f"threshold “{endless}” is not a number" in said


def test_a_page_rerun_does_not_start_the_heatmaps_again(
    runs_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    submitted = []
    real_submit = heatmap_jobs._WORKER.submit

    def counting(fn, priority=heatmap_jobs.NOW, *args, **kwargs):
        if priority == heatmap_jobs.NOW:
            submitted.append(fn.args[1])  # the sample of the page's own job
        return real_submit(fn, priority, *args, **kwargs)

    monkeypatch.setattr(heatmap_jobs._WORKER, "submit", counting)
    at = open_app(runs_root, "inspector", sample="9")
    ok(at)
    first = len(submitted)
    assert first >= 1 and submitted[-1] == 9
    at.slider[0].set_value(5).run()  # any widget reruns the page
    ok(at)
    assert len(submitted) == first


def test_the_worklists_next_rows_are_prepared_while_the_user_reads_a_sample(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the inspector shows a sample, the maps K and J lead to are computed in the
    background (class, OOD and the neuron shown first), so those switches wait for nothing."""
    from nero.run.heatmaps import cache_path

    run_dir = own_copy(tiny_run, tmp_path / "runs", "ahead", monkeypatch)
    run = read_run(run_dir)
    rows = np.flatnonzero(run.samples["split"].to_numpy() != "id_train")
    scores = run.scores[run.default_method].to_numpy()
    order = rows[np.argsort(-scores[rows], kind="stable")].tolist()
    at = open_app(tmp_path / "runs", "inspector", sample=str(order[3]))
    ok(at)
    preds = run.samples["pred"].to_numpy()
    expected = [order[4], order[5], order[2]]
    made = [
        [cache_path(run, j, "class", int(preds[j])), cache_path(run, j, "ood", None)]
        for j in expected
    ]
    assert_appear([p for pair in made for p in pair])
    assert not any((run_dir / "heatmaps").glob(f"{order[7]}_*"))  # only the neighbours
    ready = set((run_dir / "heatmaps").glob(f"{order[4]}_neuron_*"))
    at.button(key="worklist-next").click().run()  # K: the next row, its neuron map made already
    ok(at)
    shown = at.selectbox(key=f"proto-neuron-{order[4]}").value
    assert cache_path(run, order[4], "neuron", shown) in ready


def assert_appear(paths: list[Path], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.is_file() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(p.is_file() for p in paths), [p.name for p in paths if not p.is_file()]


def test_the_worklists_top_rows_are_prepared_while_the_list_is_read(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rows a reviewer opens from the worklist get their maps while the list is read
    (that the page never loads the model code itself for it:
    ``test_the_pages_without_model_work_do_not_wait_for_torch``)."""
    from nero.run.heatmaps import cache_path

    run_dir = own_copy(tiny_run, tmp_path / "runs", "top", monkeypatch)
    run = read_run(run_dir)
    at = open_app(tmp_path / "runs", "worklist")
    ok(at)
    top = at.dataframe[0].value["index"].astype(int).tolist()[:3]
    preds = run.samples["pred"].to_numpy()
    assert_appear([cache_path(run, j, "class", int(preds[j])) for j in top])


def test_the_heatmap_worker_serves_the_page_first_and_drops_what_the_user_left() -> None:
    jobs = heatmap_jobs.Jobs()
    ran: list[str] = []
    gate = threading.Event()
    blocker = jobs.submit(lambda: gate.wait(10) and ran.append("busy"))
    later = [
        jobs.submit(lambda: ran.append("ahead, still wanted"), heatmap_jobs.AHEAD),
        jobs.submit(lambda: ran.append("ahead, left"), heatmap_jobs.AHEAD, wanted=lambda: False),
    ]
    bumped = jobs.submit(lambda: ran.append("ahead, then asked for"), heatmap_jobs.AHEAD)
    jobs.submit(lambda: ran.append("ahead, then asked for"), heatmap_jobs.NOW, bumped)
    now = jobs.submit(lambda: ran.append("page"), heatmap_jobs.NOW)
    gate.set()
    for future in (blocker, now, bumped, *later):
        with contextlib.suppress(CancelledError):
            future.result(10)
    assert ran == ["busy", "ahead, then asked for", "page", "ahead, still wanted"]
    assert later[1].cancelled()


# ---------------------------------------------------------------- worklist and reviews
def test_worklist_is_the_landing_page_worst_first_and_filters(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root)
    ok(at)
    assert at.title[0].value == "Worklist"
    rows = at.dataframe[0].value
    run = read_run(runs_root / TINY_RUN)
    to_review = int((run.samples["split"] != "id_train").sum())  # training images are not
    assert len(rows) == min(50, to_review) and "id_train" not in set(rows["set"])
    scores = rows["score"].to_numpy()  # worst first
    assert (np.diff(scores) <= 0).all()
    words = {"🟢 Looks in-distribution", "🟠 Borderline", "🔴 Out-of-distribution"}
    assert set(rows["verdict"]) <= words
    at.multiselect[0].set_value(["OOD"]).run()  # verdict filter
    ok(at)
    assert set(at.dataframe[0].value["verdict"]) <= {"🔴 Out-of-distribution"}
    at.multiselect[0].set_value(list(("in-distribution", "borderline", "OOD"))).run()
    at.text_input[0].set_value("no-such-file").run()
    assert len(at.dataframe[0].value) == 0 and "**0** of" in texts(at)


def test_a_review_is_kept_in_the_run_and_shown_in_the_worklist(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On loopback the reviewer is the local user; the mark records what was agreed with."""
    import getpass

    from nero.run.reviews import review_history

    copy = own_copy(tiny_run, tmp_path / "runs", "reviewed", monkeypatch)
    run = read_run(copy)
    sample = int(run.rows("id_test")[0])  # one the worklist lists by default
    at = open_app(tmp_path / "runs", "inspector", sample=str(sample))
    ok(at)
    assert not [t for t in at.text_input if "name" in t.label.lower()]  # no typed identity
    at.radio[0].set_value("disagree")
    [t for t in at.text_input if t.label == "Note (optional)"][0].set_value("a normal fold")
    [t for t in at.text_input if t.label.startswith("Tags")][0].set_value("Fold, mucosa")
    submit = [b for b in at.get("form_submit_button") if b.label == "Save review"][0]
    submit.click().run()
    ok(at)
    mark = review_history(run).iloc[0]
    assert (mark["index"], mark["review"], mark["note"]) == (sample, "disagree", "a normal fold")
    assert (mark["reviewer"], mark["identity"]) == (getpass.getuser(), "local")
    shown = run.default_method  # the detector every page shows unless the user picks one
    assert mark["tags"] == "fold,mucosa" and mark["method"] == shown
    assert mark["score"] == pytest.approx(float(run.scores[shown].iat[sample]))
    assert mark["verdict"] in ("in-distribution", "borderline", "OOD") and mark["cutoffs"]
    at = open_app(tmp_path / "runs", "worklist")
    rows = at.dataframe[0].value
    line = rows.loc[rows["index"] == sample, "review"].iat[0]
    assert line.startswith(f"Disagree (on {mark['verdict']} by {shown})")
    assert line.endswith("· fold,mucosa — a normal fold")


@pytest.mark.parametrize("method", ["nero", "msp", "knn", "fusion"])
def test_the_inspector_gives_the_worklists_verdict_for_the_same_method(
    runs_root: Path,  # noqa: F811
    method: str,
) -> None:
    from nero.detect.registry import method_label

    run = read_run(runs_root / TINY_RUN)
    assert method in run.methods
    at = open_app(runs_root, "worklist", method=method)
    ok(at)
    rows = at.dataframe[0].value
    for _, row in rows.head(3).iterrows():  # the worst three by this method
        words = row["verdict"].split(" ", 1)[1]  # "🔴 Out-of-distribution" → the words
        inspector = open_app(runs_root, "inspector", method=method, sample=str(row["index"]))
        ok(inspector)
        badge = next(m.value for m in inspector.markdown if "-background[" in m.value)
        assert f"**{words}**" in badge and f"by {method_label(method)}" in badge


def test_a_scored_video_batch_has_its_timeline_in_the_worklist(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nero.run.new_data import score_files
    from tests.test_score import write_video

    copy = own_copy(tiny_run, tmp_path / "runs", "video", monkeypatch)
    write_video(tmp_path / "exam.mp4", seconds=1.0)
    score_files(read_run(copy), [tmp_path / "exam.mp4"], into="exam", fps=5)
    at = open_app(tmp_path / "runs", "worklist")
    ok(at)
    at.segmented_control(key="worklist-source::video").set_value("exam").run()
    ok(at)
    assert len(at.dataframe[0].value) == 5  # 1 s at 5 frames per second
    timeline = charts(at)[0]
    assert "time in the video (s)" in json.dumps(timeline["layout"]["xaxis"])


def test_the_pages_without_model_work_do_not_wait_for_torch(runs_root: Path) -> None:  # noqa: F811
    """Importing torch takes seconds: the landing page, overview and map must not pay it.

    Torch may load afterwards in the background warm-up, never on the page's own thread.
    """
    import os
    import subprocess
    import sys

    from dashboard.loaders import WARM_THREAD

    script = (
        "import builtins, sys, threading\n"
        "from streamlit.testing.v1 import AppTest\n"
        "first = []\n"
        "plain = builtins.__import__\n"
        "def watch(name, *args, **kwargs):\n"
        "    if name.split('.')[0] == 'torch' and 'torch' not in sys.modules and not first:\n"
        "        first.append(threading.current_thread().name)\n"
        "    return plain(name, *args, **kwargs)\n"
        "builtins.__import__ = watch\n"
        "at = AppTest.from_file('dashboard/app.py', default_timeout=120)\n"
        "at.query_params['view'] = sys.argv[1]\n"
        "at.run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "print(first[0] if first else 'not imported')\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "NERO_RUNS_ROOT": str(runs_root), "NERO_RUN": str(runs_root / TINY_RUN)}
    for view in ("worklist", "overview", "map"):
        done = subprocess.run(
            [sys.executable, "-c", script, view], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] in (WARM_THREAD, "not imported"), view


def test_a_server_with_sign_in_shows_nothing_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERO_ACCESS", "oidc")
    at = open_app(Path("unused"))
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert not at.dataframe and "Worklist" not in [t.value for t in at.title]


def test_a_server_without_sign_in_warns_and_asks_for_an_unverified_name(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nero.run.reviews import review_history

    copy = own_copy(tiny_run, tmp_path / "runs", "open", monkeypatch)
    monkeypatch.setenv("NERO_ACCESS", "open")
    sample = int(read_run(copy).rows("id_test")[0])
    at = open_app(tmp_path / "runs", "inspector", sample=str(sample))
    ok(at)
    assert any("without sign-in" in w.value for w in at.warning)
    submit = [b for b in at.get("form_submit_button") if b.label == "Save review"][0]
    submit.click().run()  # no name typed: refused, nothing saved
    assert any("Type your name" in e.value for e in at.error)
    assert review_history(read_run(copy)).empty
    [t for t in at.text_input if t.label.startswith("Your name")][0].set_value("Dr Open")
    [b for b in at.get("form_submit_button") if b.label == "Save review"][0].click().run()
    mark = review_history(read_run(copy)).iloc[0]
    assert (mark["reviewer"], mark["identity"]) == ("Dr Open", "unverified")


def test_the_threshold_can_be_set_as_a_share_of_normal_frames(runs_root: Path) -> None:  # noqa: F811
    """“Flag at most α of normal frames”: the conformal threshold, with the share of the run's
    own ID test images it flagged (cross-fitted), and the worklist says p-values in words."""
    from nero.run.conformal import conformal_threshold

    at = open_app(runs_root, "overview", method="msp")
    ok(at)
    said = " ".join(c.value for c in at.caption)
    assert "At most **5 %** of normal frames: threshold" in said and "cross-fitted" in said
    at.segmented_control(key="alpha::tiny::msp").set_value(20).run()
    next(b for b in at.button if b.label == "Use this threshold").click().run()
    ok(at)
    run = read_run(runs_root / TINY_RUN)
    id_test = run.scores["msp"].to_numpy()[run.rows("id_test")]
    slider = next(s for s in at.slider if s.label.startswith("Threshold"))
    assert slider.value == pytest.approx(
        np.clip(conformal_threshold(id_test, 0.2), slider.min, slider.max), rel=1e-6
    )
    at = open_app(runs_root, "worklist", method="msp")
    ok(at)
    frame = at.dataframe[0].value
    assert "unusual" in frame.columns
    assert frame["unusual"].str.contains("normal frames").all()


def test_the_inspector_explains_a_fused_score_by_its_members(runs_root: Path) -> None:  # noqa: F811
    run = read_run(runs_root / TINY_RUN)
    if "fusion" not in run.report:
        pytest.skip("the tiny run's recommendation chose fewer than two distinct members")
    at = open_app(runs_root, "inspector", sample="3")
    ok(at)
    said = texts(at)
    assert "**Fusion** (calibrated on normal test frames): p =" in said
    for member in run.report["fusion"]["members"]:
        assert f"p = {float(run.p_value(member)[3]):.3g}" in said


def test_the_overview_warns_of_sets_where_the_method_is_below_chance(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nero.run.report import weak_sets

    copy = own_copy(tiny_run, tmp_path / "runs", "weak", monkeypatch)
    report = json.loads((copy / "report.json").read_text())
    first, *_ = report["results"]
    report["results"][first]["nero"].update(auroc=39.3, fpr95=100.0)
    (copy / "report.json").write_text(json.dumps(report))
    assert set(weak_sets(report, "nero")) >= {first}
    at = open_app(tmp_path / "runs", "overview", method="nero")
    ok(at)
    warned = [w.value for w in at.warning if "does poorly on" in w.value]
    assert warned and f"**{first}** (AUROC 39.3, FPR95 100 %)" in warned[0]
    assert "**pooled**" in texts(at) and "**ID-only proxies**" in texts(at)


def test_the_inspector_offers_the_link_to_this_view(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "inspector", method="msp", sample="4")
    ok(at)
    link = at.code[0].value
    assert "sample=4" in link and "method=msp" in link and f"run={TINY_RUN}" in link


def test_the_inspector_offers_more_like_this_and_says_when_colours_are_unlike_training(
    runs_root: Path,  # noqa: F811
) -> None:
    from nero.run.colour_check import colour_reference, not_endoscopy_like

    run = read_run(runs_root / TINY_RUN)
    blue = int(run.rows("ood:blue")[0])
    at = open_app(runs_root, "inspector", sample=str(blue))
    ok(at)
    assert "More like this" in [h.value for h in at.subheader]
    assert not any("images of this run (normal test and OOD sets" in c.value for c in at.caption)
    at.toggle(key="more-like-this").set_value(True).run()  # on demand: a switch stays quick
    ok(at)
    assert any("images of this run (normal test and OOD sets" in c.value for c in at.caption)
    assert any("Not an endoscopy-like frame?" in w.value for w in at.warning)
    reference = colour_reference(run)
    normal = next(
        int(i) for i in run.rows("id_test") if not not_endoscopy_like(run, int(i), reference)
    )
    at = open_app(runs_root, "inspector", sample=str(normal))
    ok(at)
    assert not any("Not an endoscopy-like frame?" in w.value for w in at.warning)


def test_the_worklist_counts_the_flags_resting_on_the_frame_and_selects_several(
    tmp_path: Path,
    tiny_run: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nero.run.heatmaps import heatmaps_of
    from nero.run.verdicts import run_thresholds
    from tests.helpers import framed, ood_map

    copy = own_copy(tiny_run, tmp_path / "runs", "framed", monkeypatch)
    run = read_run(copy)
    method = run.default_method
    verdicts = run_thresholds(run, method).verdict(run.scores[method].to_numpy())
    flagged = [
        int(i) for i in np.flatnonzero(verdicts == "OOD") if run.samples["split"][i] != "id_train"
    ]
    assert flagged, "the tiny run flags some images"
    index = flagged[0]
    framed(Path(run.sample_path(index)))
    for other in (copy / "heatmaps").glob("*_ood_*.npz"):  # maps other tests made on this run
        other.unlink()
    (copy / "heatmaps" / "frame_shares.json").unlink(missing_ok=True)  # and their shares
    ood_map(run, index, "frame")  # all of its evidence in the unlit corners
    heatmaps_of(run).sample(index, [("ood", None)])  # the owner measures the map it gives

    at = open_app(tmp_path / "runs", "worklist")
    ok(at)
    banner = [w.value for w in at.warning if "put most of its evidence on the frame" in w.value]
    assert (
        banner
        and f"1 of the 1 flagged images whose OOD heatmap has been computed (of {len(flagged)}"
        in banner[0]
    )
    at.button(key="frame-flags-only").click().run()
    ok(at)
    assert at.dataframe[0].value["index"].tolist() == [index]
    assert any("Showing only the 1 flags" in i.value for i in at.info)
    # several at once: the toggle turns a click into a selection (rows are ticked in the
    # browser test); without a selection the page says how to select
    at = open_app(tmp_path / "runs", "worklist")
    at.toggle(key="worklist-several::framed").set_value(True).run()
    ok(at)
    assert any("Tick rows at their left" in c.value for c in at.caption)


def test_the_overview_gives_precision_at_the_prevalence_the_user_sets(runs_root: Path) -> None:  # noqa: F811
    at = open_app(runs_root, "overview")
    ok(at)
    box = next(n for n in at.number_input if n.label.startswith("OOD prevalence"))
    own = box.value
    assert any(
        f"Precision at {own:.1f} % OOD images (this run's share)" in c.value for c in at.caption
    )
    before = metric(at, "Precision")
    box.set_value(1.0).run()
    ok(at)
    after = metric(at, "Precision")
    assert any(
        f"Precision at 1.0 % OOD images; the run's own is {own:.1f} %" in c.value
        for c in at.caption
    )
    if before != "—" and after != "—":
        assert float(after.rstrip(" %")) <= float(before.rstrip(" %"))
