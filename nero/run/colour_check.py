"""A run's colour reference (:mod:`nero.data.colour`): fitted once on capped, evenly spread
training and normal test images, kept in ``RUN/heatmaps/colour_reference.v1.npz``."""

from __future__ import annotations

import warnings

import numpy as np

from nero.data.colour import ColourReference, read_summaries, read_summary
from nero.explain.kinds import HEATMAP_DIR
from nero.run.directory import Run

REFERENCE_FILE = "colour_reference.v1.npz"
TRAIN_IMAGES = 500
TEST_IMAGES = 200


def _spread(rows: np.ndarray, cap: int) -> np.ndarray:
    return rows[np.unique(np.linspace(0, rows.size - 1, min(cap, rows.size)).round().astype(int))]


def colour_reference(run: Run) -> ColourReference | None:
    """The run's reference, read from the run or fitted (None: too few readable images)."""
    path = run.path / HEATMAP_DIR / REFERENCE_FILE
    if path.is_file():
        try:
            return ColourReference.load(path)
        except (OSError, ValueError, KeyError) as exc:
            warnings.warn(f"refitting the unreadable colour reference {path}: {exc}", stacklevel=2)
    train, test = run.rows("id_train"), run.rows("id_test")
    if not train.size or not test.size:
        return None
    paths = run.samples["path"].astype(str).to_numpy()
    try:
        reference = ColourReference.fit(
            read_summaries(paths[_spread(train, TRAIN_IMAGES)]),
            read_summaries(paths[_spread(test, TEST_IMAGES)]),
        )
    except ValueError:
        return None
    try:
        path.parent.mkdir(exist_ok=True)
        reference.save(path)
    except OSError as exc:  # a read-only run still gets its answer
        warnings.warn(f"could not keep the colour reference in {path}: {exc}", stacklevel=2)
    return reference


def not_endoscopy_like(run: Run, index: int, reference: ColourReference | None) -> bool | None:
    """True when sample ``index``'s colours are farther from every training image's than
    99 % of normal test images' are (None: no reference, or the file is unreadable)."""
    if reference is None:
        return None
    summary = read_summary(run.sample_path(index))
    return None if summary is None else bool(reference.is_far(summary)[0])
