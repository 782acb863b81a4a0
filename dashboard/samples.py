"""Samples as pictures: thumbnail grids with an Inspect button, nearest training images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from dashboard import loaders, pages, state

GRID_COLUMNS = 6


def open_inspector(index: int) -> None:
    state.pick_sample(index)
    st.switch_page(pages.script("inspector"), query_params=state.url_params())


def sample_caption(row) -> str:
    cls = row["true class"] if row["label"] >= 0 else row["set"]
    return f"#{int(row['index'])} · {cls}"


def nearest_images(table, near: np.ndarray, dist: np.ndarray, key: str, scale=None) -> None:
    """Thumbnails of the nearest ID training images, captioned with class and distance, and
    (``scale``: the run's :class:`nero.run.scoring.NeighbourScale`) how close they are next to
    normal images' nearest, or that none is close."""
    if scale is not None:
        words = scale.words(dist)
        (st.warning if words.startswith("No close") else st.caption)(words)
    thumbnail_grid(
        table,
        near,
        key=key,
        captions=[
            f"#{j} · {table['true class'].iat[j]} · d={dd:.4g}"
            for j, dd in zip(near, dist, strict=True)
        ],
    )


def thumbnail_grid(
    table,
    indices: Sequence[int],
    key: str,
    captions: Sequence[str] | None = None,
    columns: int = GRID_COLUMNS,
    button: bool = True,
) -> None:
    """Small images of samples with an "Inspect" button each."""
    indices = [int(i) for i in indices]
    if not indices:
        st.caption("Nothing to show.")
        return
    cols = st.columns(columns)
    for slot, index in enumerate(indices):
        row = table.iloc[index]
        with cols[slot % columns]:
            thumb = loaders.thumbnail(str(row["path"]))
            caption = captions[slot] if captions is not None else sample_caption(row)
            if thumb is None:
                st.caption(f"{caption} (image file not found)")
            else:
                st.image(thumb, caption=caption, width="stretch")
            if button and st.button("Inspect", key=f"{key}-{index}", width="stretch"):
                open_inspector(index)
