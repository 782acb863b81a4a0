"""The reviewer's run-level tools: more like this, flags resting on the frame, the colour check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nero.data.colour import ColourReference, colour_summary, read_summaries
from nero.run.colour_check import REFERENCE_FILE, colour_reference, not_endoscopy_like
from nero.run.directory import read_run
from nero.run.frame_flags import SHARES_FILE, frame_flags
from nero.run.heatmaps import cache_path
from nero.run.scoring import more_like_this, review_rows
from tests.dashboard_fixtures import TINY_RUN, runs_root, tiny_data, tiny_run  # noqa: F401
from tests.helpers import framed, ood_map


@pytest.fixture()
def run_copy(tmp_path: Path, tiny_run: Path):  # noqa: F811
    return read_run(shutil.copytree(tiny_run, tmp_path / "copy"))


def test_more_like_this_is_the_nearest_reviewable_images_in_neros_space(tiny_run: Path) -> None:  # noqa: F811
    run = read_run(tiny_run)
    index = int(run.rows("ood:noise")[0])
    near, dist = more_like_this(run, index, k=4)
    # independently: every non-training row projected, L-distance of the detector, self left out
    rows = np.flatnonzero(run.samples["split"].to_numpy() != "id_train")
    space = run.detector.project(np.asarray(run.relevance[rows], np.float64))
    query = run.detector.project(np.asarray(run.relevance[[index]], np.float64))[0]
    brute = run.detector.space_distance(space, query)
    brute[rows == index] = np.inf
    order = np.argsort(brute, kind="stable")[:4]
    assert near.tolist() == rows[order].tolist()
    np.testing.assert_allclose(dist, brute[order], rtol=1e-9)
    assert index not in near and not set(near) & set(run.rows("id_train"))
    assert np.all(np.diff(dist) >= 0)
    # a precomputed space gives the same answer
    again = more_like_this(
        run, index, k=4, space=run.detector.project(run.relevance[review_rows(run)])
    )
    assert again[0].tolist() == near.tolist()


def load_ood_maps(run, indices) -> None:
    from nero.run.heatmaps import heatmaps_of

    for index in indices:
        heatmaps_of(run).sample(int(index), [("ood", None)])


def test_flags_resting_on_the_frame_are_counted_from_their_cached_maps(run_copy) -> None:
    run = run_copy
    flagged = [int(i) for i in run.rows("ood:noise")[:3]]
    for index in flagged:
        framed(Path(run.sample_path(index)))
    ood_map(run, flagged[0], "frame")
    ood_map(run, flagged[1], "tissue")  # flagged[2]: no map computed yet
    assert frame_flags(run, flagged).with_map == 0  # maps not measured yet: not counted
    load_ood_maps(run, flagged[:2])  # the heatmap owner measures each map it gives
    count = frame_flags(run, flagged)
    assert (count.flagged, count.with_map, count.on_frame) == (3, 2, [flagged[0]])
    assert "1 of the 2 flagged images whose OOD heatmap has been computed (of 3" in count.sentence()
    # the shares are kept beside the maps: the count reads them, not the maps
    store = run.path / "heatmaps" / SHARES_FILE
    kept = json.loads(store.read_text())
    assert set(kept) == {cache_path(run, i, "ood", None).name for i in flagged[:2]}
    kept[cache_path(run, flagged[1], "ood", None).name] = 0.9  # as if it lay on the frame
    store.write_text(json.dumps(kept))
    assert frame_flags(run, flagged).on_frame == flagged[:2]
    load_ood_maps(run, flagged[:2])  # a share already kept is not measured again
    assert frame_flags(run, flagged).on_frame == flagged[:2]
    store.write_text("{not json")  # a damaged record: measured again as the maps are given
    assert frame_flags(run, flagged).with_map == 0
    load_ood_maps(run, flagged[:2])
    assert frame_flags(run, flagged).on_frame == [flagged[0]]


def test_the_heatmap_owner_measures_the_frame_share_of_every_ood_map_it_gives(run_copy) -> None:
    from nero.run.heatmaps import heatmaps_of

    run = run_copy
    index = int(run.rows("ood:blue")[0])
    pred = int(run.samples["pred"].iat[index])
    heatmaps_of(run).sample(index, [("class", pred), ("ood", None)])
    kept = json.loads((run.path / "heatmaps" / SHARES_FILE).read_text())
    assert 0.0 <= kept[cache_path(run, index, "ood", None).name] <= 1.0
    assert frame_flags(run, [index]).with_map == 1


def test_no_map_yet_is_said_not_counted_as_tissue(run_copy) -> None:
    count = frame_flags(run_copy, [int(i) for i in run_copy.rows("ood:blue")])
    assert count.with_map == 0 and not count.on_frame
    assert count.sentence().startswith(f"None of the {count.flagged} flagged images")


def test_the_colour_summary_reads_mean_and_spread() -> None:
    flat = np.full((8, 8, 3), (255, 0, 0), np.uint8)
    summary = colour_summary(flat)
    np.testing.assert_allclose(summary, [1, 0, 0, 1, 0.5, 0, 0, 0])


def test_images_unlike_every_training_image_in_colour_are_told_apart(run_copy) -> None:
    run = run_copy
    reference = colour_reference(run)
    assert (run.path / "heatmaps" / REFERENCE_FILE).is_file()  # kept in the run
    paths = run.samples["path"].astype(str).to_numpy()
    # the tiny run's classes are red and green noise; its OOD sets blue squares and full noise
    blue = reference.is_far(read_summaries(paths[run.rows("ood:blue")]))
    normal = reference.is_far(read_summaries(paths[run.rows("id_test")]))
    assert blue.all()
    assert normal.sum() <= 1  # the 99th percentile of normal test images' own distances
    assert not_endoscopy_like(run, int(run.rows("ood:blue")[0]), reference) is True
    # read back from the run, the same reference
    again = colour_reference(run)
    np.testing.assert_array_equal(again.train, reference.train)
    assert again.far == reference.far


def test_the_colour_reference_refuses_too_few_images() -> None:
    with pytest.raises(ValueError, match="at least 2 readable training"):
        ColourReference.fit(np.full((3, 8), np.nan), np.zeros((2, 8)))


def test_an_unreadable_image_is_no_answer_not_a_crash(run_copy) -> None:
    run = run_copy
    index = int(run.rows("id_test")[0])
    Path(run.sample_path(index)).write_bytes(b"not an image")
    assert not_endoscopy_like(run, index, colour_reference(run)) is None
    assert not_endoscopy_like(run, index, None) is None
