"""The dashboard's pure helpers: overlays, upload decoding, the new-run form, settings, charts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard import charts, imaging, runs, state, uploads, vega_charts
from tests.dashboard_fixtures import runs_root, tiny_data, tiny_run  # noqa: F401


# ---------------------------------------------------------------- overlays
def test_colours_are_centred_on_zero() -> None:
    rel = np.array([[-2.0, 0.0, 2.0]])
    colours, strength = imaging.colorize(rel)
    red, white, blue = colours[0, 2], colours[0, 1], colours[0, 0]
    assert red[0] > 200 and red[2] < 60  # positive → red
    assert blue[2] > 200 and blue[0] < 60  # negative → blue
    assert white.min() > 240  # zero → neutral
    np.testing.assert_allclose(strength, [[1.0, 0.0, 1.0]])


def test_overlay_keeps_the_image_where_there_is_no_relevance() -> None:
    img = np.full((8, 8, 3), 100, np.uint8)
    rel = np.zeros((4, 4))
    rel[0, 0] = 1.0
    out = imaging.overlay(img, rel, opacity=1.0)
    assert out.shape == (4, 4, 3)
    assert (out[1:, 1:] == 100).all()  # grey image untouched
    assert out[0, 0, 0] > out[0, 0, 2]  # red where relevance is
    assert (imaging.overlay(img, np.zeros((4, 4))) == 100).all()  # an all-zero map
    with pytest.raises(ValueError, match="H×W"):
        imaging.overlay(img, np.zeros((2, 2, 2)))


def test_outline_and_upscale() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[3:7, 3:7] = True
    out = imaging.paint(img, imaging.edge(mask, width=1))
    assert (out[2, 4] == imaging.MASK_COLOUR).all() and (out[5, 5] == 0).all()
    assert imaging.upscale(img, 40).shape == (40, 40, 3)
    big = np.zeros((500, 400, 3), np.uint8)
    assert imaging.upscale(big).shape == big.shape


# ---------------------------------------------------------------- uploads
def encoded(fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 4), 90, np.uint8), "RGBA").save(buf, format=fmt)
    return buf.getvalue()


def test_decode_reads_images_as_rgb() -> None:
    decoded, error = uploads.decode("a.png", encoded())
    assert error is None and decoded.image.mode == "RGB" and decoded.image.size == (12, 12)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"%PDF-1.7 not an image", "not an image"),
        (None, "damaged"),
    ],
)
def test_decode_explains_what_is_wrong(data: bytes | None, expected: str) -> None:
    if data is None:
        data = encoded()[:50]  # a truncated PNG
    img, error = uploads.decode("x.png", data)
    assert img is None and expected in error and "x.png" in error


def test_decode_refuses_oversized_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "MAX_UPLOAD_MB", 1e-6)
    img, error = uploads.decode("big.png", encoded())
    assert img is None and "limit" in error


# ---------------------------------------------------------------- the new-run form
def test_parse_ood_lines() -> None:
    assert runs.parse_ood("a=/x\n\n b = /y \n") == {"a": "/x", "b": "/y"}
    for bad, message in (("a", "NAME="), ("a=/x\na=/y", "twice"), ("", "at least one")):
        with pytest.raises(runs.FormError, match=message):
            runs.parse_ood(bad)


def test_validate_names_the_wrong_field(tmp_path: Path) -> None:
    def request(**kw) -> runs.RunRequest:
        base = dict(name="ok", arch="resnet18", data=str(tmp_path), methods=["nero"])
        return runs.RunRequest(**{**base, **kw})

    assert runs.validate(request(), tmp_path / "root") == tmp_path / "root" / "ok"
    cases = {
        "name": request(name="../escape"),
        "arch": request(arch="resnet9000"),
        "checkpoint": request(checkpoint=str(tmp_path / "none.pt")),
        "img_size": request(img_size=5),
        "methods": request(methods=["msp"]),
        "data": request(data=str(tmp_path / "missing")),
        "id_train": request(data="", id_train=str(tmp_path / "missing")),
    }
    for field, bad in cases.items():
        with pytest.raises(runs.FormError) as caught:
            runs.validate(bad, tmp_path / "root")
        assert caught.value.field == field, (field, str(caught.value))


# ---------------------------------------------------------------- settings
def test_config_from_argv_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NERO_RUNS_ROOT", raising=False)
    monkeypatch.delenv("NERO_RUN", raising=False)
    assert state.parse_config([]).runs_root == Path("runs").resolve()
    monkeypatch.setenv("NERO_RUNS_ROOT", str(tmp_path))
    assert state.parse_config(["-x"]).runs_root == tmp_path
    cfg = state.parse_config(["--runs-root", str(tmp_path / "r"), "--run", str(tmp_path / "a")])
    assert cfg.runs_root == tmp_path / "r" and cfg.pinned_run == tmp_path / "a"
    assert state.parse_config(["--ru", "x"]).pinned_run is None  # no abbreviations


def test_available_runs_puts_the_demo_first_and_adds_a_pinned_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for name in ("zeta", "demo", "alpha"):
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text("{}")
    outside = tmp_path / "elsewhere" / "alpha"
    outside.mkdir(parents=True)
    found = state.available_runs(state.Config(root, outside))
    assert list(found) == ["alpha (command line)", "demo", "alpha", "zeta"]
    assert state.default_run(state.Config(root, outside), found) == "alpha (command line)"
    assert state.default_run(state.Config(root, None), found) == "alpha (command line)"


# ---------------------------------------------------------------- charts
def test_histogram_and_embedding_figures() -> None:
    far = np.r_[np.arange(5.0) + 3, 1e6]  # one extreme score
    steps = charts.histogram_steps(
        np.arange(1.0, 6.0), {"far": far}, 2.5, "NERO", colours={"far": "#123456"}
    )
    (id_name, *_), (name, x, y, colour) = steps.traces
    assert (id_name, name, colour) == ("ID test", "OOD: far", "#123456")  # the set's own colour
    assert steps.clipped == 1 and steps.edge < 1e6 and max(x) == steps.edge
    assert y[-2] == pytest.approx(100 / 6)  # the extreme score in the last bin
    log = charts.histogram_steps(np.arange(1.0, 6.0), {"far": far}, 2.5, "N", "log")
    assert "log" in log.x_title and max(log.traces[1][1]) == np.log10(log.edge)
    pct = charts.histogram_steps(np.arange(1.0, 6.0), {"far": far}, 2.5, "N", "percentile")
    assert max(pct.traces[1][1]) == 100  # 5, 6, 7 and 1e6 score above every normal image:
    assert pct.traces[1][2][-2] == pytest.approx(100 * 4 / 6)
    spec = vega_charts.score_histogram(steps)
    assert spec["layer"][2]["mark"]["type"] == "rule"  # the threshold
    assert spec["layer"][0]["encoding"]["x"]["title"] == steps.x_title
    pts = np.arange(12.0).reshape(6, 2)
    emb = charts.embedding_figure(
        pts,
        np.array([1, 3, 5]),
        ["ID test", "OOD: far", "OOD: far"],
        {"ID test": "#000"},
        ["a", "b", "c"],
        np.zeros((2, 2)),
        ["c0", "c1"],
        ["#111", "#222"],
        picked=3,
    )
    names = [t.name for t in emb.data]
    assert names == ["ID test", "OOD: far", "class centroids", "picked sample #3"]
    assert list(emb.data[1].customdata) == [3, 5]


def test_centroid_labels_face_away_from_their_nearest_neighbour() -> None:
    positions = charts.label_positions(np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0]]))
    assert positions[0] == "bottom center" and positions[1] == "top center"
    assert positions[2] == "middle right"


def test_the_map_opens_on_the_bulk_of_the_points_not_the_outliers() -> None:
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(size=(500, 2)), [[400.0, 400.0]]])  # one far strand point
    fig = charts.embedding_figure(
        points,
        np.arange(501),
        ["a"] * 501,
        {"a": "#000"},
        [""] * 501,
        np.zeros((1, 2)),
        ["c"],
        ["#f00"],
    )
    assert fig.layout.xaxis.range[1] < 50  # the outlier is reachable by zooming out, not shown


def test_a_heavy_tailed_score_gets_an_axis_that_shows_its_distributions():
    from dashboard.charts import default_axis

    rng = np.random.default_rng(0)
    normal = rng.normal(10, 1, 300)
    assert default_axis(normal, rng.normal(13, 1, 300)) == "score"
    heavy = rng.lognormal(8, 2, 300)  # Mahalanobis-like: OOD up to ~1e5, ID piled at the left
    assert default_axis(rng.lognormal(2, 0.3, 300), heavy) == "log"
    assert default_axis(normal - 20, np.r_[heavy, -5.0]) == "percentile"  # not all positive


def test_the_launcher_prepares_the_first_pages_run_and_never_stops_the_server(
    tmp_path,
    tiny_run,  # noqa: F811
    capsys,
):
    """The run is read and its first heatmaps computed before the server listens (the
    inspector's first sample's maps land in the run's cache); a broken run is one line."""
    import shutil

    from dashboard.warm import warm_from_argv
    from nero.run.directory import read_run
    from nero.run.heatmaps import cache_path
    from nero.run.verdicts import telling_samples

    root = tmp_path / "runs"
    copy = shutil.copytree(tiny_run, root / "warmed")
    shutil.rmtree(copy / "heatmaps", ignore_errors=True)
    run = read_run(copy)
    first = telling_samples(run, run.default_method)["Most OOD-like image"]
    warm_from_argv(["run", "app.py", "--", "--runs-root", str(root), "--run", str(copy)])
    assert cache_path(run, first, "ood", None).is_file()
    assert "run warmed prepared for the first page in" in capsys.readouterr().err
    (copy / "scores.csv").write_text("broken")
    warm_from_argv(["run", "app.py", "--", "--runs-root", str(root), "--run", str(copy)])
    assert "[nero] could not prepare run warmed ahead" in capsys.readouterr().err


def test_the_samples_j_and_k_lead_to_are_the_next_two_and_the_previous_one() -> None:
    order = [7, 3, 9, 1, 5]
    assert state.neighbours_in(order, 9) == [1, 5, 3]
    assert state.neighbours_in(order, 5) == [7, 3, 1]  # wraps around
    assert state.neighbours_in(order, 8) == [7, 3, 5]  # not in the order: K starts at its top
    assert state.neighbours_in([4, 6], 4) == [6]  # never the sample itself
    assert state.neighbours_in([], 4) == []


def test_every_chart_spec_is_valid_vega_lite() -> None:
    """The specs are plain dicts (no Altair at draw time): checked against the Vega-Lite
    schema here, as Altair would have checked them on every rerun."""
    import jsonschema
    from altair.vegalite.v6.schema.core import load_schema

    validator = jsonschema.Draft7Validator(load_schema())
    steps = charts.histogram_steps(np.arange(1.0, 6.0), {"far": np.arange(5.0) + 3}, 2.5, "NERO")
    rng = np.random.default_rng(0)
    specs = {
        "histogram": vega_charts.score_histogram(steps),
        "roc": vega_charts.roc_figure(
            {"a": rng.normal(size=50), "b": rng.normal(size=50)},
            {"a": rng.normal(1, size=40), "b": rng.normal(2, size=40)},
            {"a": 70.0, "b": 90.0},
            {"a": "A", "b": "B"},
            "b",
            point=(0.1, 0.8),
        ),
        "neurons": vega_charts.neuron_bars([3, 1], np.array([0.5, -0.2]), np.zeros(2), "cecum"),
        "probabilities": vega_charts.probability_bars(["a", "b"], np.array([0.3, 0.7])),
        "map": vega_charts.relevance_map(
            [{"index": 0, "x": 0.1, "y": 0.2, "train": True, "group": "ID train", "sample": "#0"}],
            {"ID train": "#000"},
            ((0.0, 1.0), (0.0, 1.0)),
            [{"x": 0.5, "y": 0.5, "label": "a", "colour": "#123", "position": "top center"}],
            picked=(0.1, 0.2),
            tooltip=[("sample", "sample")],
        ),
        "map by score": vega_charts.relevance_map(
            [{"index": 0, "x": 0.1, "y": 0.2, "train": False, "value": 3.0}],
            None,
            ((0.0, 1.0), (0.0, 1.0)),
            [],
            value_label="score",
            value_range=(0.0, 5.0),
        ),
    }
    for name, spec in specs.items():
        errors = [e.message for e in validator.iter_errors(spec)]
        assert not errors, (name, errors[:3])
        json.dumps(spec)  # plain values only
    bars = specs["neurons"]["layer"][0]["data"]["values"]
    assert [b["neuron"] for b in bars] == ["n3", "n1"] and bars[1]["sign"] == "against"
