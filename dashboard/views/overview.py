"""Overview: how well does each method separate in-distribution from out-of-distribution?"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, components, loaders, state, vega_charts
from nero.detect.metrics import auroc, precision_at, rates_at_threshold
from nero.detect.registry import method_label
from nero.run.conformal import conformal_threshold
from nero.run.report import WEAK_AUROC, WEAK_FPR95, best_mask, comparison_frame, weak_sets
from nero.tables import safe_csv

ALL_SETS = state.ALL_SETS
# Resolution of the threshold slider: steps across the score range.
SLIDER_STEPS = 400

name, r = components.require_run()
components.header(
    "Overview",
    "How well does each method separate in-distribution images from out-of-distribution "
    "ones? Move the threshold to see what a deployment would catch and what it would miss.",
)
table = loaders.table(r)
if not r.ood_sets:
    st.info("This run has no out-of-distribution set, so there is nothing to separate.")
    st.stop()
methods = r.methods
labels = {m: method_label(m) for m in methods}

rec = r.recommendation
c1, c2 = st.columns([3, 2])
method_key, method_cb = state.persistent_widget(state.method_key(name), r.default_method)
if st.session_state[method_key] not in methods:
    st.session_state[method_key] = methods[0]
method = c1.selectbox(
    "Method",
    methods,
    format_func=labels.get,
    key=method_key,
    help="Every OOD detector scored in this run. Higher scores mean more out-of-distribution.",
    **method_cb,
)
if rec is not None and rec.method in methods:
    c1.caption(
        f":material/recommend: **{labels[rec.method]}** is recommended for this model and "
        f"data: mean proxy AUROC {rec.mean_proxy_auroc:.1f} (± {rec.spread:.1f} across "
        f"checks, worst {rec.worst_proxy_auroc:.1f}) on checks made from normal images "
        f"alone — each class held out in turn, and corrupted normal images — "
        f"{rec.margin:.1f} ahead of {labels.get(rec.runner_up, rec.runner_up)}. "
        "No OOD set of this run was used to choose it."
    )
acquisition = r.report.get("acquisition", {}).get("sets", {})
for set_name, control in acquisition.items():
    if control["flagged"]:
        own = control["methods"].get(method, {}).get("auroc")
        mine = f"{labels[method]}: {own:.1f}; " if own is not None else ""
        st.warning(
            f":material/photo_camera: **{set_name}**: {control['flag']}. With the tissue "
            f"blanked, {labels.get(control['furthest'], control['furthest'])} still separates "
            f"these images from normal ones at AUROC {control['furthest_auroc']:.1f} "
            f"({mine}50 = the frame tells nothing).",
        )
if acquisition and not any(c["flagged"] for c in acquisition.values()):
    st.caption(
        ":material/photo_camera: Acquisition control: with the tissue blanked, no method "
        "separates any OOD set from normal images beyond 50 ± "
        f"{r.report['acquisition']['margin']:.0f} AUROC — the frames alone tell nothing here."
    )
set_options = [ALL_SETS, *r.ood_sets]
ood_choice = c2.selectbox(
    "OOD set",
    set_options,
    format_func=lambda s: "All OOD sets together" if s == ALL_SETS else s,
    key=state.ood_set_key(name),
    help="Which out-of-distribution images count as positives for the rates and ROC.",
)
view = loaders.method_view(r, method)
shown_ood = view.ood if ood_choice == ALL_SETS else {ood_choice: view.ood[ood_choice]}
ood_scores = np.concatenate(list(shown_ood.values()))

lo, hi = charts.robust_range(np.concatenate([view.id_test, *view.ood.values()]))
thr_key, thr_cb = state.persistent_widget(
    state.threshold_key(name, method), float(np.clip(view.default_threshold, lo, hi))
)
st.session_state[thr_key] = float(np.clip(st.session_state[thr_key], lo, hi))
threshold = st.slider(
    "Threshold — images scoring above it are flagged as out-of-distribution",
    min_value=lo,
    max_value=hi,
    step=(hi - lo) / SLIDER_STEPS,
    format="%.4g",
    key=thr_key,
    help="Starts at the value that keeps 95 % of ID test images (the FPR95 operating point). "
    "The range ends at the 99.5th percentile of all scores. Verdicts elsewhere use the run's "
    "calibrated thresholds (flagging 5 % and 1 % of normal images), not this slider.",
    **thr_cb,
)

p_test = r.p_value(method)
if p_test is not None:
    p_test = p_test[r.rows("id_test")]
    a1, a2 = st.columns([2, 3])
    alpha_pct = (
        a1.segmented_control(
            "Flag at most … of normal frames",
            [1, 2, 5, 10, 20],
            default=5,
            format_func=lambda a: f"{a} %",
            key=f"alpha::{name}::{method}",
            help="A conformal threshold: its p-value promise holds for new frames from the same "
            "kind of examination as the run's ID test images, which calibrate it.",
        )
        or 5
    )
    cut = conformal_threshold(view.id_test, alpha_pct / 100)
    realised = 100 * float(np.mean(p_test <= alpha_pct / 100))
    a2.caption(
        f"At most **{alpha_pct} %** of normal frames: threshold **{cut:.4g}**"
        + (" (no frame can be flagged this strictly with so few normal images)" if not
           np.isfinite(cut) else "")
        + f". On this run's own ID test images, cross-fitted, **{realised:.1f} %** were "
        "flagged. It promises nothing for frames from another hospital or device."
    )  # fmt: skip
    if a2.button("Use this threshold", key=f"use-alpha::{name}::{method}") and np.isfinite(cut):
        st.session_state[state.threshold_key(name, method)] = float(np.clip(cut, lo, hi))
        st.rerun()

rates = rates_at_threshold(view.id_test, ood_scores, threshold)
m1, m2, m3, m4 = st.columns(4)
normal_below = 100.0 * float(np.mean(view.id_test <= threshold))
m4.metric(
    "Threshold",
    f"{threshold:.4g}",
    help="Images scoring above it are flagged.",
)
m4.caption(f"above {normal_below:.1f} % of normal test images")
left, right = st.columns([3, 2], gap="large")
with left:
    positive = bool(view.id_test.min() > 0 and ood_scores.min() > 0)
    axes = ["score", "log", "percentile"] if positive else ["score", "percentile"]
    natural = charts.default_axis(view.id_test, ood_scores)
    axis = (
        st.segmented_control(
            "Score axis",
            axes,
            default=natural if natural in axes else "score",
            key=f"hist-axis::{name}::{method}",
            format_func={
                "score": "score",
                "log": "log score",
                "percentile": "percentile of normal",
            }.get,
            help="Log spreads out scores piled near zero (positive scores only); the percentile "
            "among normal test images spreads out any heavy tail evenly.",
        )
        or "score"
    )
    steps = charts.histogram_steps(
        view.id_test,
        shown_ood,
        threshold,
        labels[method],
        axis=axis,
        colours={s: c for s, c in zip(r.ood_sets, charts.OOD_COLOURS * 3, strict=False)},
    )
    st.vega_lite_chart(vega_charts.score_histogram(steps), key="histogram", width="stretch")
    if steps.clipped:
        st.caption(f"{steps.clipped} scores above {steps.edge:.4g} are counted in the last bin.")
with right:
    m1.metric(
        "OOD caught",
        f"{100 * rates['tpr']:.1f} %",
        help="True positive rate (TPR): share of out-of-distribution images scored above the "
        "threshold.",
    )
    m2.metric(
        "ID flagged",
        f"{100 * rates['fpr']:.1f} %",
        help="False positive rate (FPR): share of in-distribution test images wrongly flagged "
        "(false alarms).",
    )
    run_prevalence = 100.0 * ood_scores.size / max(ood_scores.size + view.id_test.size, 1)
    prevalence = st.number_input(
        "OOD prevalence for precision (%)",
        min_value=0.0,
        max_value=100.0,
        value=round(run_prevalence, 1),
        step=0.5,
        key=f"prevalence::{name}",
        help="The share of unusual images where the model will be used. It defaults to this "
        "run's share, which is set by how the test sets were assembled, not by a ward.",
    )
    precision = precision_at(rates["tpr"], rates["fpr"], prevalence / 100.0)
    m3.metric(
        "Precision",
        "—" if np.isnan(precision) else f"{100 * precision:.1f} %",
        help="Of all flagged images, the share that really is out-of-distribution, at the "
        "prevalence below.",
    )
    st.caption(
        f"Precision at {prevalence:.1f} % OOD images"
        + (" (this run's share)" if abs(prevalence - round(run_prevalence, 1)) < 1e-9 else "")
        + f"; the run's own is {run_prevalence:.1f} %."
    )
    st.markdown("**Confusion matrix** at this threshold")
    confusion = pd.DataFrame(
        [[rates["tn"], rates["fp"]], [rates["fn"], rates["tp"]]],
        index=["ID test", "OOD"],
        columns=["kept", "flagged"],
    )
    st.dataframe(confusion, width="stretch")
    st.caption(
        "Rows: what the images truly are (normal test images, OOD images); columns: what "
        f"this threshold does with them: {ood_scores.size} OOD and {view.id_test.size} "
        "normal images here."
    )
    if st.button("Reset to the 95 % ID operating point", key="reset-threshold"):
        st.session_state[state.threshold_key(name, method)] = float(
            np.clip(view.default_threshold, lo, hi)
        )
        st.rerun()

# ---------------------------------------------------------------- comparison of methods
st.subheader("All methods compared")
weak = weak_sets(r.report, method)
if weak:
    listed = "; ".join(
        f"**{s}** (AUROC {v['auroc']:.1f}, FPR95 {v['fpr95']:.0f} %)" for s, v in weak.items()
    )
    st.warning(
        f":material/report: {labels[method]} does poorly on {listed}: below "
        f"{WEAK_AUROC:.0f} AUROC (50 is chance) or flagging at least {WEAK_FPR95:.0f} % of "
        "normal images to catch 95 % of the set. Its verdicts on such images are not to be "
        "relied on; another method may do better there (table below)."
    )
st.caption(
    f"**Per-set AUROC** (higher is better) and FPR95 (false alarms when 95 % of ID is kept; "
    f"lower is better) on each OOD set, and their **mean over sets** (the methods are ordered "
    f"by it, here and in the README). Best of each column in bold green. The ROC legend "
    f"below gives the AUROC **pooled** over the sets shown; the recommendation's is the mean "
    f"over **ID-only proxies**. "
    f"ID accuracy of the classifier: **{r.report.get('id_accuracy', float('nan')):.2f} %**."
)
show_aupr = st.toggle("Also show AUPR-In and AUPR-Out", key="show-aupr")
metrics = ("auroc", "fpr95", "aupr_in", "aupr_out") if show_aupr else ("auroc", "fpr95")
frame = comparison_frame(r.report, metrics)
mean_first = [c for c in frame.columns if c[0] == "mean"] + [
    c for c in frame.columns if c[0] != "mean"
]
frame = frame[mean_first]
best = best_mask(frame)
frame.index = [labels.get(m, m) for m in frame.index]
best.index = frame.index
pretty = {"auroc": "AUROC ↑", "fpr95": "FPR95 ↓", "aupr_in": "AUPR-In ↑", "aupr_out": "AUPR-Out ↑"}
flat_cols = [f"{s} · {pretty[m]}" for s, m in frame.columns]
frame.columns = flat_cols
best.columns = flat_cols
styled = frame.style.format("{:.2f}").apply(
    lambda col: [
        "font-weight: 700; background-color: #DFF2E1; color: #14532D" if b else ""
        for b in best[col.name]
    ],
    axis=0,
)
st.dataframe(
    styled,
    width="stretch",
    height=min(38 + 35 * len(frame), 720),
    column_config={"_index": st.column_config.Column("method", width="medium", pinned=True)},
)

# ---------------------------------------------------------------- ROC curves
st.subheader("ROC curves")
st.caption(
    "True positive rate (OOD caught) against false positive rate (ID flagged) over every "
    "threshold; the cross marks the current threshold of the selected method."
)
ranked = list(frame.index)
by_label = {labels.get(m, m): m for m in methods}
default_roc = list(dict.fromkeys([method, "nero", by_label.get(ranked[0], method)]))
default_roc = [m for m in default_roc if m in methods]
roc_methods = st.multiselect(
    "Methods on the plot",
    methods,
    default=default_roc,
    format_func=labels.get,
    key=f"roc-methods::{name}",
)
if method not in roc_methods:
    roc_methods = [method, *roc_methods]
id_scores, ood_for, aurocs = {}, {}, {}
for m in roc_methods:
    mv = loaders.method_view(r, m)
    pooled = np.concatenate(
        list(mv.ood.values()) if ood_choice == ALL_SETS else [mv.ood[ood_choice]]
    )
    id_scores[m], ood_for[m] = mv.id_test, pooled
    aurocs[m] = auroc(mv.id_test, pooled)
st.vega_lite_chart(
    vega_charts.roc_figure(
        id_scores, ood_for, aurocs, labels, method, point=(rates["fpr"], rates["tpr"])
    ),
    key="roc",
    width="stretch",
)

# ---------------------------------------------------------------- exports
with st.expander("Run details: model, data, NERO parameters, versions"):
    manifest = r.manifest
    st.json(
        {
            "folder": str(r.path),
            "created": manifest.get("created"),
            "model": manifest.get("model"),
            "image size": manifest.get("img_size"),
            "data": manifest.get("data"),
            "preset": manifest.get("preset"),
            "NERO": manifest.get("nero"),
            "versions": manifest.get("versions"),
        },
        expanded=1,
    )
st.subheader("Export")
export_cols = [
    "index",
    "path",
    "split",
    "set",
    "label",
    "true class",
    "pred",
    "predicted class",
    *methods,
]
d1, d2, _ = st.columns([1, 1, 3])
d1.download_button(
    "Scores (CSV)",
    safe_csv(table[export_cols]).encode(),
    file_name=f"{name}-scores.csv",
    mime="text/csv",
    icon=":material/download:",
)
d2.download_button(
    "Report (JSON)",
    json.dumps(r.report, indent=2).encode(),
    file_name=f"{name}-report.json",
    mime="application/json",
    icon=":material/download:",
)
