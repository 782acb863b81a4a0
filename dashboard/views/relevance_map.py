"""Relevance map: where do samples sit relative to the class centroids NERO measures?"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import (
    charts,
    components,
    heatmap_jobs,
    loaders,
    review,
    samples,
    state,
    vega_charts,
    verdicts,
)
from nero.detect.registry import method_label
from nero.tables import safe_csv

# Up to this many points the map is drawn with Vega-Lite (fast to load; click and box
# selection), above with Plotly (WebGL, lasso); above WEBGL_POINTS Plotly draws with WebGL
# (SVG gets slow in the browser).
VEGA_POINTS = 5000
WEBGL_POINTS = 3000
# Thumbnails shown for a box/lasso selection.
MAX_SELECTION_THUMBS = 24
COLOUR_MODES = ("Split", "True class", "Predicted class", "Score")
SELECTION_SIG = "_map_selection"

name, r = components.require_run()
components.header(
    "Relevance map",
    "Where do samples sit? Each dot is an image, placed by how its neurons contributed to the "
    "decision (UMAP of NERO's relevance space); stars are the class centroids. A 2-D map keeps "
    "neighbourhoods, not distances: an image far from every star *on the map* is not always "
    "far in the space NERO measures — its score is the measure.",
)
emb = loaders.embedding(r)
if emb is None:
    st.info(
        "The map has not been computed for this run yet. It is computed once and stored in the "
        "run folder; UMAP takes about a minute the first time (compiling), seconds after that."
    )
    if st.button("Compute the map now", type="primary", key="compute-map"):
        from nero.run.embedding import ensure_embedding

        with st.spinner("Fitting UMAP on the relevance vectors…"):
            try:
                ensure_embedding(r.path)
            except (OSError, ValueError) as exc:
                st.error(f"The map could not be computed: {exc}")
                st.stop()
        st.rerun()
    st.stop()

table = loaders.table(r)
points = emb["points"]
if emb["method"] != "umap":
    st.caption(
        f"Drawn with the first two PCA axes instead of UMAP "
        f"({emb['info'].get('fallback_reason') or 'as asked'})."
    )

splits = list(dict.fromkeys(table["split"]))
c1, c3, c4 = st.columns([3, 2, 1], vertical_alignment="bottom")
colour_by = (
    c1.segmented_control(
        "Colour by", COLOUR_MODES, default=COLOUR_MODES[0], required=True, key="map-colour"
    )
    or COLOUR_MODES[0]
)
active = state.active_method(name, r)  # the detector every page names its scores by
score_method = active
if colour_by == "Score":
    score_method = c3.selectbox(
        "Score of",
        r.methods,
        index=r.methods.index(score_method),
        format_func=method_label,
        key="map-score-method",
    )
shown_splits = (
    st.pills(
        "Show",
        splits,
        selection_mode="multi",
        default=splits,
        format_func=charts.split_label,
        key=f"map-splits::{name}",
    )
    or []
)

split_col = table["split"].to_numpy()
rows = np.flatnonzero(np.isin(split_col, shown_splits))
n_classes = len(r.class_names)
class_colour = {c: charts.CLASS_COLOURS[i % 7] for i, c in enumerate(r.class_names)}
ood_colour = {
    f"OOD: {s}": charts.OOD_COLOURS[i % len(charts.OOD_COLOURS)] for i, s in enumerate(r.ood_sets)
}
values = None
if colour_by == "Split":
    groups = [charts.split_label(s) for s in split_col[rows]]
    colours = {charts.split_label(k): v for k, v in charts.split_colours(r.ood_sets).items()}
elif colour_by == "True class":
    groups = [
        t if lab >= 0 else f"OOD: {s}"
        for t, lab, s in zip(
            table["true class"].to_numpy()[rows],
            table["label"].to_numpy()[rows],
            table["set"].to_numpy()[rows],
            strict=True,
        )
    ]
    colours = {**class_colour, **ood_colour}
elif colour_by == "Predicted class":
    groups = list(table["predicted class"].to_numpy()[rows])
    colours = class_colour
else:
    groups = ["samples"] * rows.size
    colours = {}
    values = table[score_method].to_numpy(np.float64)[rows]

active_scores = table[active].to_numpy()
active_label = method_label(active)


def tooltip_table(shown: pd.DataFrame) -> pd.DataFrame:
    """What a dot's tooltip says: the sample, its set, its classes and the active score."""
    return pd.DataFrame(
        {
            "sample": "#" + shown["index"].astype(str),
            "set": shown["split"].map(charts.split_label),
            "classes": "true: " + shown["true class"].astype(str) + " · predicted: "
            + shown["predicted class"].astype(str),
            "score": np.char.mod("%.4g", active_scores[shown["index"].to_numpy()]),
        },
        index=shown.index,
    )  # fmt: skip


def plotly_map():
    """The map in Plotly (lasso, and WebGL for large maps); its selection event."""
    # Whole columns at once; a WebGL-sized map sends no per-point text (see embedding_figure).
    words = None
    if rows.size <= WEBGL_POINTS:
        tips = tooltip_table(table.iloc[rows])
        words = (
            tips["sample"] + " · " + tips["set"] + "<br>" + tips["classes"]
            + f"<br>{active_label} score " + tips["score"]
        ).to_numpy()  # fmt: skip
    fig = charts.embedding_figure(
        points,
        rows,
        groups,
        colours,
        words,
        emb["centroids"],
        centroid_labels,
        centroid_colours,
        picked=picked,
        values=values,
        value_label=f"{method_label(score_method)} score",
        webgl=rows.size > WEBGL_POINTS,
    )
    return st.plotly_chart(
        fig,
        key=f"map::{name}",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        width="stretch",
    )


def vega_map():
    """The map in Vega-Lite (the front end loads it in a sixth of Plotly's bytes: the page's
    first chart comes sooner); its selection event."""
    tips = tooltip_table(table.iloc[rows])
    samples_rows = tips.assign(
        index=rows, x=points[rows, 0], y=points[rows, 1], train=split_col[rows] == "id_train"
    )
    if values is None:
        samples_rows["group"] = groups
        present = dict.fromkeys(groups)
        palette = {g: colours.get(g, "#888") for g in present}
        value_range = (0.0, 1.0)
    else:
        samples_rows["value"] = values
        palette = None
        value_range = charts.value_range(values)
    view = charts.map_view(points[rows], emb["centroids"])
    positions = charts.label_positions(emb["centroids"])
    stars = [
        {"x": float(cx), "y": float(cy), "label": lbl, "colour": col, "position": pos}
        for (cx, cy), lbl, col, pos in zip(
            emb["centroids"], centroid_labels, centroid_colours, positions, strict=True
        )
    ]
    spec = vega_charts.relevance_map(
        samples_rows.to_dict("records"),
        palette,
        view,
        stars,
        picked=tuple(points[picked]) if picked is not None else None,
        value_label=f"{method_label(score_method)} score",
        value_range=value_range,
        tooltip=[("sample", "sample"), ("set", "set"), ("classes", "classes"),
                 ("score", f"{active_label} score")],
    )  # fmt: skip
    return st.vega_lite_chart(
        spec,
        key=f"map-vega::{name}",
        on_select="rerun",
        selection_mode=(vega_charts.PICK, vega_charts.AREA),
        width="stretch",
    )


centroid_classes = np.asarray(r.detector.centroid_classes_)
centroid_labels = [r.class_names[c] if c < n_classes else str(c) for c in centroid_classes]
centroid_colours = [class_colour.get(lbl, "#FFD166") for lbl in centroid_labels]
picked = state.picked_sample(len(table))
lasso = rows.size > VEGA_POINTS or c4.toggle(
    "Lasso",
    key="map-lasso",
    help="Select with a free-hand lasso too (the map then loads a larger charting library).",
)
left, right = st.columns([3, 1], gap="medium")
with left:
    if lasso:
        event = plotly_map()
        how = (
            "Click a dot to pick that image. To select many, choose *Box select* or *Lasso "
            "select* in the chart's toolbar (top right) and drag. Double-click the map to clear."
        )
    else:
        event = vega_map()
        how = (
            "Click a dot to pick that image; drag a box to select many. Double-click the map to "
            "clear. Turn on *Lasso* for free-hand selection."
        )
    st.caption(how)


def plotly_chosen(selection) -> list[int]:
    """Sample indices a Plotly selection holds (each dot's ``customdata``)."""
    out = []
    for point in selection.get("points", []) if selection else []:
        value = point.get("customdata")
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        if value is not None:
            out.append(int(value))
    return sorted(set(out))


def vega_chosen(selection) -> list[int]:
    """Sample indices a Vega-Lite selection holds: the clicked dot, or the shown dots inside
    the dragged box."""
    if not selection:
        return []
    out = {int(p["index"]) for p in selection.get(vega_charts.PICK) or [] if "index" in p}
    box = selection.get(vega_charts.AREA) or {}
    if "x" in box and "y" in box:
        (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
        x, y = points[rows, 0], points[rows, 1]
        out |= set(rows[(x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)].tolist())
    return sorted(out)


chosen = (plotly_chosen if lasso else vega_chosen)(event.selection if event is not None else None)
if tuple(chosen) != st.session_state.get(SELECTION_SIG):
    st.session_state[SELECTION_SIG] = tuple(chosen)
    if len(chosen) == 1:
        state.pick_sample(chosen[0])
        picked = chosen[0]

with right:
    st.markdown("**Picked image**")
    if picked is None:
        st.caption("Click a dot on the map to pick an image.")
    else:
        row = table.iloc[picked]
        thumb = loaders.thumbnail(str(row["path"]))
        if thumb is not None:
            st.image(thumb, width="stretch")
        st.markdown(
            f"#{picked} · {charts.split_label(row['split'])}  \n"
            f"true: **{row['true class']}** · predicted: **{row['predicted class']}**  \n"
            f"{active_label} score **{active_scores[picked]:.4g}**"
        )
        if st.button("Open in the inspector", type="primary", key="open-inspector"):
            samples.open_inspector(picked)
        heatmap_jobs.prepare_if_loaded(r, [picked])  # its maps, before that click

if len(chosen) > 1:
    st.subheader(f"{len(chosen)} images selected")
    counts = table.iloc[chosen]["split"].map(charts.split_label).value_counts()
    st.caption(" · ".join(f"{k}: {v}" for k, v in counts.items()))
    by_score = sorted(chosen, key=lambda i: -active_scores[i])
    if len(chosen) > MAX_SELECTION_THUMBS:
        st.caption(f"Showing the {MAX_SELECTION_THUMBS} with the highest {active_label} score.")
    samples.thumbnail_grid(
        table,
        by_score[:MAX_SELECTION_THUMBS],
        key="sel",
        captions=[
            f"#{i} · {charts.split_label(table['split'].iat[i])} · score {active_scores[i]:.3g}"
            for i in by_score[:MAX_SELECTION_THUMBS]
        ],
    )
    review.bulk_review_form(
        r, chosen, active, active_scores, verdicts.thresholds(r, active), key=f"map-{name}"
    )
    st.download_button(
        "Selection (CSV)",
        safe_csv(table.iloc[chosen]).encode(),
        file_name=f"{name}-selection.csv",
        mime="text/csv",
        icon=":material/download:",
    )
