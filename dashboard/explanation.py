"""Why a sample scored as it did: the score's parts, the deviating neurons, the heatmaps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st

from dashboard import imaging, loaders, state, vega_charts
from dashboard.components import LOG
from nero.explain.field_of_view import FrameShare, frame_share
from nero.run.directory import Run
from nero.run.heatmap_scale import display_scale
from nero.run.heatmap_view import NEGLIGIBLE_WORDS

# Neurons shown in the relevance bars by default: enough to see a pattern, few to read.
TOP_NEURONS = 20


def frame_sentence(share: FrameShare) -> str:
    """The engine's sentence (:meth:`FrameShare.sentence`), in bold."""
    return f"**{share.sentence()}**"


def score_parts(expl, row: int, detector) -> None:
    """NERO's score and the numbers it is made of (row ``row`` of an Explanation)."""
    distance = float(expl.distance[row])
    bias_term = float(expl.bias_term[row])
    norm_ratio = float(expl.norm_ratio[row])
    score = float(expl.score[row])
    uses_ratio = bool(getattr(detector, "norm_ratio", True))
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Distance to nearest centroid",
        f"{distance:.4g}",
        help="How far the sample's neuron relevance is from the closest class centroid, "
        "in NERO's PCA space (the detector's L1/L2 distance).",
    )
    c2.metric(
        "Bias term",
        f"{bias_term:.4g}",
        help="λ·|bias relevance|: how much of the decision came from the classifier's bias "
        "rather than from the image.",
    )
    c3.metric(
        "Norm ratio" if uses_ratio else "Norm ratio (not used)",
        f"{norm_ratio:.3f}",
        help="Share of the feature activation held by the most negatively relevant neurons "
        "(between 0 and 1)." + ("" if uses_ratio else " This detector is configured without it."),
    )
    c4.metric("NERO score", f"{score:.4g}")
    if uses_ratio:
        st.caption(
            f"score = (distance + bias term) × norm ratio = ({distance:.4g} + "
            f"{bias_term:.4g}) × {norm_ratio:.3f} = **{score:.4g}**"
        )
    else:
        st.caption(
            f"score = distance + bias term = {distance:.4g} + {bias_term:.4g} = **{score:.4g}**"
        )


def neuron_section(
    relevance_row: np.ndarray,
    deviation_row: np.ndarray,
    centroid_row: np.ndarray,
    centroid_label: str,
    key: str,
) -> list[int]:
    """Bars of the most deviating neurons against the nearest centroid; returns their ids."""
    d = deviation_row.shape[0]
    top = st.columns([1, 2])[0].slider(
        "Neurons shown", 5, min(60, d), min(TOP_NEURONS, d), key=f"{key}-top", step=5
    )
    order = imaging.most_deviating(deviation_row)[:top]
    fig = vega_charts.neuron_bars(order, relevance_row[order], centroid_row[order], centroid_label)
    st.vega_lite_chart(fig, key=f"{key}-bars", width="stretch")
    st.caption(
        "Bars: this sample's relevance per neuron (red = supports the prediction, blue = "
        "against). Black ticks: the nearest class centroid. Long gaps between bar and tick are "
        "what makes the sample unusual."
    )
    return [int(j) for j in order]


def class_probabilities(class_names: Sequence[str], probabilities: np.ndarray) -> None:
    """The model's class probabilities for one image, as bars under a heading."""
    st.markdown("**Class probabilities**")
    st.vega_lite_chart(
        vega_charts.probability_bars(class_names, probabilities), key="probs", width="stretch"
    )


def why_this_score(
    run: Run,
    expl,
    row: int,
    relevance: np.ndarray,
    n_features: int,
    verdict: str,
    key: str,
) -> list[int]:
    """The "Why this score" section for row ``row`` of an Explanation: the engine's reading in
    plain words, then the score's parts and the deviating neurons in an expander; returns
    those neurons.

    ``relevance`` is the image's relevance row (its first ``n_features`` entries are the
    neurons'), ``verdict`` its verdict and ``key`` the prefix of the section's widget keys.
    """
    from nero.run.scoring import plain_explanation

    st.subheader("Why this score")
    st.markdown(plain_explanation(run, relevance, int(expl.nearest_class[row]), verdict))
    with st.expander("Technical breakdown: the score's parts and the neurons that deviate"):
        score_parts(expl, row, run.detector)
        return neuron_section(
            np.asarray(relevance[:n_features], np.float64),
            expl.deviation[row],
            run.detector.centroid_relevance(int(expl.nearest_centroid[row])),
            run.class_names[int(expl.nearest_class[row])],
            key=key,
        )


HEATMAP_KINDS = (
    ("class", "Class evidence", "pixels behind the prediction of the chosen class."),
    (
        "ood",
        "OOD evidence",
        "the neurons' deviation from the nearest class centroid, traced back to the pixels "
        "through what exceeds anything the class showed in training. Read it as a pointer, "
        "not a segmentation (how often it lands on the anomaly: README, Heatmaps).",
    ),
)


def heatmap_views(
    img: np.ndarray,
    compute: Callable[[int | None], dict[str, dict]],
    class_names: Sequence[str],
    predicted: int,
    key: str,
    file_stem: str,
    mask_path: str = "",
) -> Callable[[], None]:
    """Class and OOD heatmaps side by side, over the image, with opacity and downloads.

    Draws the controls and two placeholders now and returns the function that fills them:
    call it at the end of the page, so everything else shows while the heatmaps compute.
    ``compute(target)`` returns both heatmaps (kind → fields), made in one batched pass.
    """
    h1, h2, h3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    target = h1.selectbox(
        "Class explained by the class heatmap",
        list(range(len(class_names))),
        index=predicted,
        format_func=lambda c: class_names[c] + (" (predicted)" if c == predicted else ""),
        key=f"{key}-target",
    )
    op_key, op_cb = state.persistent_widget("heatmap-opacity", 0.7)
    opacity = h2.slider("Heatmap opacity", 0.0, 1.0, step=0.05, key=op_key, **op_cb)
    show_mask = bool(mask_path) and h3.toggle("Artefact outline", True, key=f"{key}-mask")
    slots = []
    for col, (_kind, title, what) in zip(st.columns(2, gap="large"), HEATMAP_KINDS, strict=True):
        col.markdown(f"**{title}**: {what}")
        slot = col.empty()
        slot.caption(":material/hourglass_top: computing the heatmap…")
        slots.append(slot)
    st.caption(
        "Red: evidence for, blue: evidence against; the stronger the colour, the more it "
        "counts. The image is shown in grey underneath so its own colours do not mislead."
    )

    def fill() -> None:
        try:
            maps = compute(target)
        except Exception as exc:  # any engine failure: explain it, keep the page
            LOG.warning("heatmaps failed: %s", exc)
            for slot in slots:
                slot.warning(f"This heatmap could not be computed: {exc}")
            return
        for slot, (kind, _title, _what) in zip(slots, HEATMAP_KINDS, strict=True):
            with slot.container():
                heatmap_panel(
                    img,
                    maps[kind],
                    opacity,
                    mask_path if show_mask else "",
                    f"{key}-dl-{kind}",
                    f"{file_stem}-{kind}-heatmap.png",
                )

    return fill


def heatmap_panel(
    img: np.ndarray,
    hm: dict,
    opacity: float,
    mask_path: str,
    key: str,
    file_name: str,
) -> None:
    """One heatmap over the image, what made it, and its PNG download.

    Drawn on the run's shared colour scale when the run has one (so maps of different
    images compare); an OOD heatmap with no more evidence than normal images show is drawn
    as the plain image with that message, not as a saturated patch.
    """
    scale = hm.get("scale")
    if hm.get("unusual") is False:
        picture = imaging.upscale(np.asarray(img))
        st.image(picture, width="stretch")
        st.success(
            ":material/check: **No unusual evidence**: this image's OOD evidence "
            f"({hm['evidence_share']:.0f} % of normal test images show less) is within what "
            "normal images show."
        )
        return
    factor = 1.0
    if scale is not None:
        scale, factor = display_scale(hm["relevance"], scale)
    if hm.get("negligible"):  # dust, not evidence: faint, and said
        opacity *= 0.25
        st.info(f":material/blur_off: This map shows {NEGLIGIBLE_WORDS}; drawn faint.")
    picture = imaging.upscale(imaging.overlay(img, hm["relevance"], opacity, scale))
    picture = imaging.shade_unseen(picture, hm.get("seen"))
    if mask_path:  # outlined after upscaling, so the line stays thin
        border = loaders.mask_edge(mask_path, (picture.shape[1], picture.shape[0]))
        if border is not None:
            picture = imaging.paint(picture, border)
    st.image(picture, width="stretch")
    if hm.get("seen") is not None and not np.asarray(hm["seen"]).all():
        st.caption("Hatched: the part of the image the model never saw (frame, overlays).")
    share = frame_share(hm["relevance"], img)
    if share.on_frame:
        st.warning(f":material/crop_free: {frame_sentence(share)}")
    if scale is not None:
        st.image(imaging.colour_bar(scale), width="stretch")
        st.caption(
            f"blue −{scale:.3g} · 0 · red +{scale:.3g}: "
            + (
                "the run's scale (full colour at what the strongest pixels of normal test "
                "images reach)"
                if factor <= 1.0
                else f"{factor:.3g}× the run's scale: this map is that much stronger than "
                "normal images' strongest pixels"
            )
            + (
                f"; more OOD evidence than {hm['evidence_share']:.0f} % of normal images"
                if hm.get("unusual")
                else ""
            )
        )
    else:
        st.caption("Colour scaled to this map alone (the run has no heatmap scale yet).")
    facts = [hm["method"], hm["rule_set"]]
    conservation = hm["conservation"]
    if isinstance(conservation, int | float) and np.isfinite(conservation):
        facts.append(f"conservation {conservation:.3g}")
    caption = " · ".join(f for f in facts if f)
    if hm["note"]:
        caption += f"  \n{hm['note']}"
    st.caption(caption)
    st.download_button(
        "Heatmap (PNG)",
        lambda: loaders.png_bytes(picture),  # encoded when clicked, not on every rerun
        file_name=file_name,
        mime="image/png",
        key=key,
        icon=":material/download:",
    )
