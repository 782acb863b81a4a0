"""The overview's and the inspector's charts as Vega-Lite specs: pure functions of arrays that
return plain dicts (``st.vega_lite_chart`` draws them), no Streamlit.

Why not Plotly here: the overview and the inspector are the pages a reviewer opens first, and
the inspector redraws on every sample switch; their charts are simple (steps, lines, bars).
Streamlit's front end loads Vega in about a sixth of the bytes of Plotly (0.8 MB against
4.6 MB), so the first chart appears seconds earlier on a cold browser
(``bench/dashboard.py --browser``). Plotly stays where its features are needed: the relevance
map's lasso and WebGL, the video timeline.

Why dicts, not Altair: Altair checks every spec against the Vega-Lite JSON schema when it is
drawn, 15–35 ms a chart on this machine — a tenth of an inspector switch for its two charts.
The specs are checked against that schema once, in the tests (``tests/test_dashboard_helpers``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dashboard.charts import CLASS_COLOURS, NEGATIVE, POSITIVE, HistogramSteps
from nero.detect.metrics import roc

# A ROC curve of a large run has a point per distinct score: this many are enough to draw it.
ROC_POINTS = 400
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"

Spec = dict[str, Any]


def _rows(**columns: Sequence[Any] | np.ndarray) -> list[dict[str, Any]]:
    """Column arrays of equal length as Vega's inline rows (plain Python values)."""
    names = list(columns)
    values = [np.asarray(columns[n]).tolist() for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _layered(layers: list[Spec], height: int, legend: bool = True) -> Spec:
    spec: Spec = {"$schema": SCHEMA, "height": height, "layer": layers}
    if legend:
        spec["config"] = {
            "legend": {
                "orient": "top", "title": None, "labelLimit": 320, "symbolStrokeWidth": 3,
                "columns": 3,
            }
        }  # fmt: skip
    return spec


def _quantitative(field: str, title: str, domain: list[float] | None = None) -> Spec:
    channel: Spec = {"field": field, "type": "quantitative", "title": title}
    if domain is not None:
        channel["scale"] = {"domain": domain, "nice": False}
    return channel


def score_histogram(steps: HistogramSteps) -> Spec:
    """Score histograms (share of each split per bin) as filled steps, and the threshold as a
    dashed rule: the bins, clipping and axes :func:`dashboard.charts.histogram_steps` made."""
    names = [name for name, *_ in steps.traces]
    values = [
        row
        for name, xs, ys, _ in steps.traces
        for row in _rows(split=[name] * len(xs), x=xs, share=ys)
    ]
    encoding = {
        "x": _quantitative("x", steps.x_title, [steps.lo, steps.hi]),
        "y": {"field": "share", "type": "quantitative", "title": "% of the split", "stack": None},
        "color": {
            "field": "split", "type": "nominal", "sort": names,
            "scale": {"domain": names, "range": [c for *_, c in steps.traces]},
        },
    }  # fmt: skip
    tooltip = [
        {"field": "split", "type": "nominal"},
        {"field": "share", "type": "quantitative", "format": ".1f", "title": "% of split"},
    ]
    data = {"values": values}
    at = {"values": [{"x": float(steps.threshold_x), "label": "threshold"}]}
    at_x = {"field": "x", "type": "quantitative"}
    return _layered(
        [
            {"data": data, "mark": {"type": "area", "interpolate": "step-after", "opacity": 0.12},
             "encoding": encoding},
            {"data": data, "mark": {"type": "line", "interpolate": "step-after", "strokeWidth": 2},
             "encoding": {**encoding, "tooltip": tooltip}},
            {"data": at, "mark": {"type": "rule", "color": "#222", "strokeDash": [6, 4],
                                  "strokeWidth": 2},
             "encoding": {"x": at_x}},
            {"data": at, "mark": {"type": "text", "align": "left", "dx": 4, "dy": -6,
                                  "baseline": "top", "color": "#222"},
             "encoding": {"x": at_x, "y": {"value": 0}, "text": {"field": "label",
                                                                   "type": "nominal"}}},
        ],
        380,
    )  # fmt: skip


def roc_figure(
    id_scores: Mapping[str, np.ndarray],
    ood_scores: Mapping[str, np.ndarray],
    aurocs: Mapping[str, float],
    labels: Mapping[str, str],
    highlight: str,
    point: tuple[float, float] | None = None,
) -> Spec:
    """ROC curves (OOD = positive) of several methods; the highlighted one drawn thick, and
    ``point`` (the current threshold) marked."""
    values, names, colours = [], [], []
    for i, method in enumerate(id_scores):
        fpr, tpr = roc(id_scores[method], ood_scores[method])
        if fpr.size > ROC_POINTS:  # keep the curve's shape, drop points closer than a pixel
            keep = np.unique(np.linspace(0, fpr.size - 1, ROC_POINTS).astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        name = f"{labels[method]} (AUROC {aurocs[method]:.1f})"
        names.append(name)
        colours.append(POSITIVE if method == highlight else CLASS_COLOURS[i % len(CLASS_COLOURS)])
        width = 3.5 if method == highlight else 1.8
        values += _rows(fpr=fpr, tpr=tpr, method=[name] * fpr.size, width=[width] * fpr.size)
    axes = {
        "x": _quantitative("fpr", "false positive rate (ID flagged)", [0, 1]),
        "y": _quantitative("tpr", "true positive rate (OOD caught)", [0, 1]),
    }
    layers = [
        {"data": {"values": [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 1.0, "tpr": 1.0}]},
         "mark": {"type": "line", "color": "#BBB", "strokeDash": [2, 3]}, "encoding": axes},
        {"data": {"values": values}, "mark": {"type": "line"},
         "encoding": {
             **axes,
             "color": {"field": "method", "type": "nominal", "sort": names,
                       "scale": {"domain": names, "range": colours}},
             "strokeWidth": {"field": "width", "type": "quantitative", "legend": None},
             "detail": {"field": "method", "type": "nominal"},
         }},
    ]  # fmt: skip
    if point is not None:
        marker = {"fpr": float(point[0]), "tpr": float(point[1]), "what": "current threshold"}
        layers.append(
            {"data": {"values": [marker]},
             "mark": {"type": "point", "shape": "cross", "size": 160, "filled": True,
                      "color": "#222"},
             "encoding": {**axes, "tooltip": [{"field": "what", "type": "nominal"}]}}
        )  # fmt: skip
    return _layered(layers, 380)


def neuron_bars(
    neurons: Sequence[int],
    sample: np.ndarray,
    centroid: np.ndarray,
    centroid_label: str,
) -> Spec:
    """The sample's relevance of its most deviating neurons (bars, red = for the prediction,
    blue = against), with the centroid's value drawn as a black tick."""
    sample, centroid = np.asarray(sample, np.float64), np.asarray(centroid, np.float64)
    order = [f"n{j}" for j in neurons]
    what = f"centroid of {centroid_label}"
    data = {
        "values": _rows(
            neuron=order, relevance=sample, centroid=centroid, deviation=sample - centroid,
            sign=np.where(sample >= 0, "for", "against"), what=[what] * len(order),
        )
    }  # fmt: skip
    x = {
        "field": "neuron",
        "type": "nominal",
        "sort": order,
        "title": "neuron (most deviating first)",
    }
    tooltip = [
        {"field": "neuron", "type": "nominal"},
        {"field": "relevance", "type": "quantitative", "format": ".4g"},
        {"field": "centroid", "type": "quantitative", "format": ".4g", "title": what},
        {"field": "deviation", "type": "quantitative", "format": "+.4g"},
    ]
    return _layered(
        [
            {"data": data, "mark": {"type": "bar"},
             "encoding": {
                 "x": x, "y": {"field": "relevance", "type": "quantitative", "title": "relevance"},
                 "color": {"field": "sign", "type": "nominal", "legend": None,
                           "scale": {"domain": ["for", "against"], "range": [POSITIVE, NEGATIVE]}},
                 "tooltip": tooltip,
             }},
            {"data": data, "mark": {"type": "tick", "color": "#111", "thickness": 3},
             "encoding": {
                 "x": x, "y": {"field": "centroid", "type": "quantitative"},
                 "opacity": {"field": "what", "type": "nominal", "legend": {"title": None}},
                 "tooltip": tooltip,
             }},
        ],
        320,
    )  # fmt: skip


def probability_bars(class_names: Sequence[str], probabilities: np.ndarray) -> Spec:
    """The model's probability of each class, as horizontal bars (in %)."""
    values = _rows(
        **{"class": list(class_names), "probability": 100.0 * np.asarray(probabilities, float)}
    )
    return {
        "$schema": SCHEMA,
        "height": max(90, 26 * len(class_names)),
        "data": {"values": values},
        "mark": {"type": "bar", "color": CLASS_COLOURS[0]},
        "encoding": {
            "x": _quantitative("probability", "probability (%)", [0, 100]),
            "y": {"field": "class", "type": "nominal", "sort": list(class_names), "title": None},
            "tooltip": [
                {"field": "class", "type": "nominal"},
                {"field": "probability", "type": "quantitative", "format": ".1f"},
            ],
        },
    }


# A five-pointed star (Vega's unit square, centred), the class centroids' mark.
STAR = (
    "M0,-1L0.2245,-0.309L0.9511,-0.309L0.3633,0.118L0.5878,0.809L0,0.382L-0.5878,0.809"
    "L-0.3633,0.118L-0.9511,-0.309L-0.2245,-0.309Z"
)
# Where a centroid's label sits for each of charts.label_positions' answers.
LABEL_OFFSETS = {
    "top center": (0, -22, "center"), "bottom center": (0, 22, "center"),
    "middle right": (18, 0, "left"), "middle left": (-18, 0, "right"),
}  # fmt: skip
PICK, AREA = "pick", "area"  # the map's selections: a click, a dragged box


def relevance_map(
    samples: list[dict[str, Any]],
    groups: Mapping[str, str] | None,
    view: tuple[tuple[float, float], tuple[float, float]],
    centroids: list[dict[str, Any]],
    picked: tuple[float, float] | None = None,
    value_label: str = "",
    value_range: tuple[float, float] = (0.0, 1.0),
    tooltip: Sequence[tuple[str, str]] = (),
) -> Spec:
    """The map of a run: samples as dots (``x``, ``y``, ``index``, ``train`` — training images
    are drawn smaller — and the ``tooltip`` fields),
    coloured by ``group`` in the ``groups`` colours or, with ``groups`` None, by ``value`` on a
    continuous scale; the class centroids as labelled stars (``x``, ``y``, ``label``,
    ``colour``, ``position``); a ring around ``picked``. A click selects a sample (:data:`PICK`,
    its ``index``), a drag a box (:data:`AREA`, its ``x`` and ``y`` ranges). ``view`` is the
    initial ((x0, x1), (y0, y1)); points outside it are clipped until the user zooms out."""
    (x0, x1), (y0, y1) = view
    axis = {"labels": False, "ticks": False, "title": None, "grid": False, "domain": False}
    x = {"field": "x", "type": "quantitative", "axis": axis, "scale": {"domain": [x0, x1]}}
    y = {"field": "y", "type": "quantitative", "axis": axis, "scale": {"domain": [y0, y1]}}
    if groups is not None:
        names = list(groups)
        colour: Spec = {
            "field": "group", "type": "nominal", "sort": names,
            "scale": {"domain": names, "range": [groups[g] for g in names]},
            "legend": {"orient": "bottom", "title": None, "columns": 4, "labelLimit": 320},
        }  # fmt: skip
    else:
        colour = {
            "field": "value", "type": "quantitative", "title": value_label,
            "scale": {"scheme": "viridis", "domain": list(value_range), "clamp": True},
        }  # fmt: skip
    faded = {"condition": {"param": AREA, "empty": True, "value": 0.9}, "value": 0.3}
    layers: list[Spec] = [
        {
            "data": {"name": "samples"},
            "params": [
                {"name": PICK, "select": {"type": "point", "fields": ["index"], "on": "click",
                                          "clear": "dblclick"}},
                {"name": AREA, "select": {"type": "interval", "clear": "dblclick"}},
            ],
            "mark": {"type": "circle", "size": 60, "clip": True, "stroke": "white",
                     "strokeWidth": 0.5},
            "encoding": {
                "x": x, "y": y, "color": colour, "opacity": faded,
                "size": {"field": "train", "type": "nominal", "legend": None,
                         "scale": {"domain": [True, False], "range": [30, 64]}},
                "tooltip": [{"field": f, "type": "nominal", "title": t} for f, t in tooltip],
            },
        },
        {
            "data": {"values": centroids},
            "mark": {"type": "point", "shape": STAR, "size": 520, "filled": True,
                     "stroke": "#111", "strokeWidth": 2, "opacity": 1},
            "encoding": {
                "x": x, "y": y,
                "color": {"field": "colour", "type": "nominal", "scale": None},
                "tooltip": [{"field": "label", "type": "nominal", "title": "centroid of"}],
            },
        },
    ]  # fmt: skip
    for position, (dx, dy, align) in LABEL_OFFSETS.items():
        layers.append(
            {
                "data": {"values": centroids},
                "transform": [{"filter": {"field": "position", "equal": position}}],
                "mark": {"type": "text", "dx": dx, "dy": dy, "align": align,
                         "baseline": "middle", "fontSize": 14, "color": "#111",
                         "fontWeight": "bold"},
                "encoding": {"x": x, "y": y, "text": {"field": "label", "type": "nominal"}},
            }
        )  # fmt: skip
    if picked is not None:
        layers.append(
            {
                "data": {"values": [{"x": float(picked[0]), "y": float(picked[1])}]},
                "mark": {"type": "point", "shape": "circle", "size": 600, "filled": False,
                         "stroke": "#111", "strokeWidth": 3},
                "encoding": {"x": x, "y": y},
            }
        )  # fmt: skip
    spec = _layered(layers, 640, legend=False)
    spec["datasets"] = {"samples": samples}
    return spec
