"""`nero score`: new images against a fitted run, without refitting."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nero.cli import main
from nero.run.batches import read_batch, run_batches
from nero.run.directory import read_run
from nero.run.verdicts import VERDICTS, Thresholds
from tests.helpers import evaluate_args, make_folders, tiny_checkpoint

METHODS = "nero,msp,energy,knn,vim"


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    data = make_folders(root / "data")
    ckpt = tiny_checkpoint(root / "model.pt")
    run = root / "run"
    with pytest.warns(UserWarning):
        assert main(evaluate_args(data, run, "--model", str(ckpt), "--methods", METHODS)) == 0
    return data, run


def test_images_of_the_run_get_the_runs_own_scores(scored_run, tmp_path, capsys):
    data, run_dir = scored_run
    out = tmp_path / "scores.csv"
    assert main(["score", "--run", str(run_dir), str(data / "id_test"), "--out", str(out)]) == 0
    assert "scored 10 of 10 images" in capsys.readouterr().out
    new = pd.read_csv(out).set_index("path")
    run = read_run(run_dir)
    own = run.samples.merge(run.scores, on="index").set_index("path").loc[new.index]
    for method in METHODS.split(","):
        np.testing.assert_allclose(new[method], own[method], rtol=1e-6, atol=1e-9)
    names = [run.class_names[p] for p in own["pred"]]
    assert list(new["predicted"]) == names
    assert set(new["verdict"]) <= set(VERDICTS)
    assert new["percentile"].between(0, 100).all()


def test_a_batch_goes_into_the_run_and_bad_files_are_listed(scored_run, tmp_path, capsys):
    data, run_dir = scored_run
    (tmp_path / "new").mkdir()
    for image in sorted((data / "ood" / "noise").glob("*.png"))[:3]:
        (tmp_path / "new" / image.name).write_bytes(image.read_bytes())
    (tmp_path / "new" / "cut.png").write_bytes(b"\x89PNG\r\n not really")
    args = ["score", "--run", str(run_dir), str(tmp_path / "new"), "--into", "monday"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "scored 3 of 4 images" in printed.out and "cut.png" in printed.err
    run = read_run(run_dir)
    assert run_batches(run) == ["monday"]
    batch = read_batch(run, "monday")
    assert len(batch) == 3 and set(batch.columns) >= {"path", "nero", "verdict", "percentile"}
    folder = run_dir / "batches" / "monday"
    assert np.load(folder / "features.npy").shape == (3, 512)
    assert np.load(folder / "relevance.npy").shape == (3, 513)
    assert main(args) == 2  # the name is taken: nothing replaced
    assert "already has a batch named 'monday'" in capsys.readouterr().err
    assert len(read_batch(run, "monday")) == 3


def test_three_state_verdicts_follow_the_normal_images():
    normal = np.arange(1, 101, dtype=float)  # 100 normal test scores
    thresholds = Thresholds.from_normal(normal)
    assert thresholds.borderline == 96 and thresholds.ood == 100
    verdicts = thresholds.verdict(np.array([50, 97, 101]))
    assert list(verdicts) == ["in-distribution", "borderline", "OOD"]
    np.testing.assert_allclose(thresholds.percentile(np.array([0.5, 50.5, 200])), [0, 50, 100])


def write_video(path, seconds: float = 2.0, rate: int = 10, size: int = 32) -> None:
    """A small MPEG-4 video whose colour changes every second (made with PyAV)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * rate)):
            colour = (200, 60, 60) if i < rate else (60, 200, 60)
            image = np.full((size, size, 3), colour, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_video_is_scored_frame_by_frame_with_timestamps(scored_run, tmp_path, capsys):
    _data, run_dir = scored_run
    video = tmp_path / "colonoscopy.mp4"
    write_video(video)
    args = ["score", "--run", str(run_dir), str(video), "--fps", "5", "--into", "video1"]
    assert main(args) == 0
    assert "scored 10 of 10 images" in capsys.readouterr().out
    frames = read_batch(read_run(run_dir), "video1")
    np.testing.assert_allclose(frames["time"], np.arange(10) * 0.2, atol=1e-6)
    assert list(frames["frame"]) == list(range(0, 20, 2))
    assert set(frames["video"]) == {str(video)}
    assert all(Path(p).is_file() for p in frames["path"])  # the frames are kept in the run
    assert main(["score", "--run", str(run_dir), str(tmp_path / "none.mp4")]) == 2


def test_forward_batches_are_regrouped_into_scoring_blocks_in_order():
    from nero.model.batches import ForwardBatch, regroup

    def batch(start: int, size: int) -> ForwardBatch:
        rows = np.arange(start, start + size)
        return ForwardBatch(
            rows,
            rows[:, None] * np.ones((1, 4), np.float32),
            rows[:, None] * np.ones((1, 2), np.float32),
            [""] * size,
            [f"n{r}" for r in rows],
        )

    blocks = list(regroup([batch(0, 3), batch(3, 3), batch(6, 3), batch(9, 1)], rows=5))
    assert [len(b.index) for b in blocks] == [6, 4]
    joined = np.concatenate([b.index for b in blocks])
    assert joined.tolist() == list(range(10))
    assert np.array_equal(np.concatenate([b.features[:, 0] for b in blocks]), joined)
    assert [n for b in blocks for n in b.notes] == [f"n{r}" for r in range(10)]


def test_score_csv_and_batches_are_safe_to_open_in_a_spreadsheet(scored_run, tmp_path):
    """A file named like a formula is written neutralised; the batch reads back the name."""
    data, run_dir = scored_run
    folder = tmp_path / "=HYPERLINK(1)"  # the path cell starts with "/" but the name does not
    folder.mkdir()
    image = sorted((data / "ood" / "noise").glob("*.png"))[0]
    (folder / "@SUM(1+1).png").write_bytes(image.read_bytes())
    out = tmp_path / "new.csv"
    assert main(["score", "--run", str(run_dir), str(folder), "--out", str(out)]) == 0
    assert main(["score", "--run", str(run_dir), str(folder), "--into", "formulae"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    text_cells = table.select_dtypes(exclude="number").to_numpy().ravel()
    assert not any(str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for v in text_cells)
    batch = read_batch(read_run(run_dir), "formulae")
    assert Path(batch["path"].iat[0]).name == "@SUM(1+1).png"


def test_a_run_that_recommends_fusion_gives_fusion_verdicts_to_new_images(
    scored_run, tmp_path, capsys
):
    import json
    import shutil

    data, run_dir = scored_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    report = json.loads((copy / "report.json").read_text())
    assert "fusion" in report  # members were chosen from ID-only evidence
    report["recommended"]["method"] = "fusion"
    (copy / "report.json").write_text(json.dumps(report))
    out = tmp_path / "scores.csv"
    assert main(["score", "--run", str(copy), str(data / "ood" / "noise"), "--out", str(out)]) == 0
    assert "verdicts by fusion" in capsys.readouterr().out
    new = pd.read_csv(out).set_index("path")
    run = read_run(copy)
    own = run.samples.merge(run.scores, on="index").set_index("path").loc[new.index]
    np.testing.assert_allclose(new["fusion"], own["fusion"], rtol=1e-6)  # as the run fused them
    assert set(new["verdict"]) <= set(VERDICTS)


def test_neighbours_are_called_far_or_equidistant_only_when_they_are(scored_run):
    from nero.run.scoring import NeighbourScale, nearest_train, neighbour_scale

    scale = NeighbourScale(typical=10.0, far=20.0)
    assert scale.words(np.array([30.0, 31.0])).startswith("No close training image")
    equal = scale.words(np.array([15.0, 15.05, 15.1]))
    assert "effectively equidistant" in equal and "1.5× as far" in equal
    spread = scale.words(np.array([5.0, 9.0]))
    assert "equidistant" not in spread and "No close" not in spread and "0.5×" in spread
    # on a run: its own test images' nearest set the scale, far OOD images are beyond it
    run = read_run(scored_run[1])
    found = neighbour_scale(run)
    assert 0 < found.typical <= found.far
    own = int(run.rows("id_test")[0])
    _, dist = nearest_train(run, run.relevance[own], k=3)
    assert dist.min() <= found.far


def test_verdict_table_and_telling_samples_use_each_methods_own_scores(scored_run):
    from nero.run.verdicts import run_thresholds, telling_samples, verdict_table

    run = read_run(scored_run[1])
    high = {m: float(run.scores[m].max()) + 1e6 for m in ("nero", "msp")}
    rows = verdict_table(run, high)
    assert [r["method"] for r in rows] == ["nero", "msp"]
    assert {r["verdict"] for r in rows} == {"OOD"} and {r["percentile"] for r in rows} == {100}
    for method in ("nero", "knn"):
        picks = telling_samples(run, method)
        scores = run.scores[method].to_numpy()
        ood = run.samples["split"].str.startswith("ood:").to_numpy()
        assert scores[picks["Most OOD-like image"]] == scores[ood].max()
        assert scores[picks["Missed OOD image"]] == scores[ood].min()
        test = run.rows("id_test")
        assert picks["Closest false alarm"] in test
        assert run_thresholds(run, method).verdict(scores[test]).size == test.size
