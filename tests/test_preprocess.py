"""The one input path: frame-invariant input, its record, the acquisition control, and maps
back on the original image's grid."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from nero.data.field_of_view import FRAMED, NO_FRAME, NOT_FOUND, frame_only
from nero.data.preprocess import Preprocessing

SIDE = 256


def scene(seed: int = 0, side: int = SIDE) -> np.ndarray:
    """Smooth reddish 'tissue' with folds: the same scene seen through every frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side] / side
    folds = np.sin(9 * x + 4 * y + rng.uniform(0, 6)) * np.cos(5 * y - 3 * x)
    base = np.stack([170 + 40 * folds, 80 + 25 * folds, 60 + 15 * folds], axis=2)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def through(tissue: np.ndarray, frame: str, box: tuple[int, int, int, int] | None = None):
    """The scene seen through one frame: an octagon, a circle, an octagon with a marker box
    and burnt-in text, or no frame; ``box`` (left, top, right, bottom) places the field of view."""
    h, w = tissue.shape[:2]
    if frame == "none":
        return Image.fromarray(tissue)
    left, top, right, bottom = box or (0, 0, w, h)
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    if frame == "circle":
        draw.ellipse((left, top, right - 1, bottom - 1), fill=255)
    else:
        cut = 0.22 * (right - left)
        draw.polygon(
            [(left + cut, top), (right - cut, top), (right, top + cut), (right, bottom - cut),
             (right - cut, bottom), (left + cut, bottom), (left, bottom - cut), (left, top + cut)],
            fill=255,
        )  # fmt: skip
    out = np.where(np.asarray(mask)[..., None] > 0, tissue, 0).astype(np.uint8)
    picture = Image.fromarray(out)
    if frame == "octagon+box+text":
        draw = ImageDraw.Draw(picture)
        draw.rectangle((0, int(0.72 * h), int(0.28 * w), h), fill=(0, 0, 0))  # marker box
        draw.text((2, 2), "12/03/2016 09:41", fill=(255, 255, 255))
        draw.text((2, 14), "CVP-9", fill=(230, 230, 230))
    return picture


FRAMES = ("octagon", "circle", "octagon+box+text")
AUTO = Preprocessing(64, "auto")


def test_every_frame_gives_the_same_input_outside_the_tissue():
    """Octagon, circle, octagon with a marker box and text: exactly 0 outside the disc;
    with the tissue blanked (only the frame left) the three inputs are identical."""
    tissue = scene()
    tensors, blanks = [], []
    for frame in FRAMES:
        image = through(tissue, frame)
        prepared = AUTO.prepare(image)
        assert prepared.status == FRAMED and prepared.inside is not None
        tensor = AUTO.normalise(prepared)
        assert torch.count_nonzero(tensor[:, ~torch.tensor(prepared.inside)]) == 0
        tensors.append(tensor)
        blanks.append(AUTO(frame_only(image)))
    for other in blanks[1:]:
        assert torch.equal(blanks[0], other)  # nothing of the frame's shape or overlays
    # the same frame elsewhere and smaller in a wider image: still the same input
    moved = np.zeros((200, 320, 3), np.uint8)
    moved[20:180, 90:250] = scene(side=160)
    small = through(moved, "circle", (90, 20, 250, 180))
    assert torch.equal(AUTO(frame_only(small)), blanks[0])


def test_the_tissue_is_kept_and_an_image_without_a_frame_passes_unchanged():
    tissue = scene()
    prepared = AUTO.prepare(through(tissue, "octagon"))
    octagon_area = np.asarray(through(np.full_like(tissue, 200), "octagon").convert("L")) > 0
    kept = prepared.tissue.sum() / (prepared.tissue.size * octagon_area.mean())
    assert kept > 0.8  # no crop throws a quarter of the tissue away
    plain = np.asarray(Image.fromarray(tissue).resize((64, 64), Image.BILINEAR), np.float32)
    shown = np.asarray(prepared.image, np.float32)
    inside = prepared.tissue
    assert np.corrcoef(plain[inside].ravel(), shown[inside].ravel())[0, 1] > 0.95
    none = AUTO.prepare(through(tissue, "none"))
    assert none.status == NO_FRAME and none.inside is None
    assert np.array_equal(np.asarray(none.image), plain.astype(np.uint8))
    assert torch.equal(
        AUTO(Image.fromarray(tissue)), Preprocessing(64, "none")(Image.fromarray(tissue))
    )


def test_a_field_of_view_that_cannot_be_found_falls_back_with_a_note():
    dark = Image.fromarray(np.full((80, 80, 3), 3, np.uint8))
    prepared = AUTO.prepare(dark)
    assert prepared.status == NOT_FOUND and "not found" in prepared.note
    assert prepared.tissue[32, 32] and torch.isfinite(AUTO(dark)).all()


def test_plain_preprocessing_is_the_papers_square_resize():
    from torchvision import transforms

    image = Image.fromarray(scene())
    paper = transforms.Compose(
        [
            transforms.Resize((48, 48)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    assert torch.equal(Preprocessing(48, "none")(image), paper(image))


def test_maps_go_back_onto_the_original_grid():
    """A hot spot in the model's input lands where that tissue is in the original image,
    and the part the model saw lines up with the field of view."""
    picture = np.zeros((200, 320, 3), np.uint8)
    picture[20:180, 90:250] = scene(side=160)
    image = through(picture, "circle", (90, 20, 250, 180))
    prepared = AUTO.prepare(image)
    top, bottom, left, right = prepared.geometry.box
    assert abs(top - 20) <= 3 and abs(left - 90) <= 3 and abs(bottom - 180) <= 3
    hot = np.zeros((64, 64), np.float32)
    hot[16:24, 40:48] = 1.0  # a patch of the model's input
    back = prepared.geometry.to_original(hot, long_side=None)
    assert back.shape == (200, 320)
    ys, xs = np.nonzero(back > 0.5)
    expect_y = top + (bottom - top) * np.array([16, 24]) / 64
    expect_x = left + (right - left) * np.array([40, 48]) / 64
    assert abs(ys.min() - expect_y[0]) <= 3 and abs(ys.max() - expect_y[1]) <= 3
    assert abs(xs.min() - expect_x[0]) <= 3 and abs(xs.max() - expect_x[1]) <= 3
    seen = prepared.seen_in_original(long_side=None)
    fov = np.asarray(image.convert("L")) > 20
    assert (seen & fov).sum() / (seen | fov).sum() > 0.8 and not seen[~fov].any()
    assert prepared.geometry.to_original(hot).shape == (200, 320)  # within the 512 cap
    assert prepared.geometry.to_original(hot, long_side=160).shape == (100, 160)


def test_the_record_round_trips_and_refuses_another_version():
    auto = Preprocessing(96, "auto")
    assert Preprocessing.from_record(json.loads(json.dumps(auto.record()))) == auto
    with pytest.raises(ValueError, match="version 99"):
        Preprocessing.from_record({**auto.record(), "version": 99})
    with pytest.raises(ValueError, match="frame must be one of"):
        Preprocessing(96, "crop")


# ---------------------------------------------------------------- the model's contract
def framed_folders(root, ood_frame: str, ood_tint: tuple[int, int, int] = (0, 0, 0)):
    """ID: two classes of tissue through octagons; one OOD set through ``ood_frame``, its
    tissue tinted by ``ood_tint`` (a content change)."""
    rng = np.random.default_rng(0)
    for split, n in (("id_train", 8), ("id_test", 8)):
        for k, cls in enumerate(("alpha", "beta")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                tissue = scene(int(rng.integers(1000)), 64)
                tissue = np.clip(tissue.astype(int) + (0, 40 * k, 0), 0, 255).astype(np.uint8)
                through(tissue, "octagon").save(folder / f"{i}.png")
    folder = root / "ood" / "other"
    folder.mkdir(parents=True)
    for i in range(8):
        tissue = np.clip(scene(int(rng.integers(1000)), 64).astype(int) + ood_tint, 0, 255)
        through(tissue.astype(np.uint8), ood_frame).save(folder / f"{i}.png")
    return root


def evaluated(data, out, frame: str, recommend: bool = False):
    from nero.run.directory import read_run
    from nero.run.pipeline import Folders, evaluate_folders

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_folders(
            Folders(data), out, arch="resnet18", img_size=32, frame=frame, embedding=None,
            heatmap_scale=False, methods=["nero", "msp", "energy", "knn"], progress_bar=False,
            device="cpu", recommend=recommend,
        )  # fmt: skip
    return read_run(out)


@pytest.mark.parametrize("frame", ["none", "auto"])
def test_the_control_flags_a_set_that_differs_only_in_its_frame(tmp_path, frame):
    """A circle where training had octagons: flagged when the model sees the raw frame,
    not when it sees tissue only (then the frame-only copies are identical)."""
    run = evaluated(framed_folders(tmp_path / "data", "circle"), tmp_path / "run", frame)
    control = run.report["acquisition"]["sets"]["other"]
    assert set(control["methods"]) == {"nero", "msp", "energy", "knn"}
    assert control["flagged"] is (frame == "none")
    if frame == "auto":
        assert all(m["auroc"] == 50.0 for m in control["methods"].values())
    else:
        assert "how they were recorded" in control["flag"]
    assert run.manifest["preprocessing"]["frame"] == frame
    table = (run.path / "frame_only_scores.csv").read_text().splitlines()
    assert table[0].startswith("index,") and len(table) == 1 + 16 + 8  # ID test + OOD rows


def test_the_control_scores_fusion_as_the_run_fuses_it(tmp_path):
    """Frame-only copies get a fused score from the members' p-values against the run's ID
    test scores: the control says whether fusion, too, can be had from the frame alone."""
    import pandas as pd

    from nero.run.conformal import combine, p_values

    run = evaluated(framed_folders(tmp_path / "data", "circle"), tmp_path / "run", "none", True)
    members = run.report["fusion"]["members"]
    control = run.report["acquisition"]["sets"]["other"]
    assert "fusion" in control["methods"] and control["flagged"]
    table = pd.read_csv(run.path / "frame_only_scores.csv")
    test = run.rows("id_test")
    expected = combine(
        [p_values(run.scores[m].to_numpy()[test], table[m].to_numpy()) for m in members],
        run.report["fusion"]["combination"],
    )
    np.testing.assert_allclose(table["fusion"].to_numpy(), expected, rtol=1e-6)


def test_the_control_does_not_flag_a_set_that_differs_only_in_content(tmp_path):
    data = framed_folders(tmp_path / "data", "octagon", ood_tint=(-60, 60, 80))
    run = evaluated(data, tmp_path / "run", "none")
    control = run.report["acquisition"]["sets"]["other"]
    assert not control["flagged"] and control["furthest_auroc"] == 50.0


def test_the_sidecar_record_reaches_the_manifest_and_an_old_checkpoint_says_so(tmp_path):
    from nero.cli import main
    from nero.run.directory import read_run

    data = framed_folders(tmp_path / "data", "circle")
    ckpt = tmp_path / "model.pt"
    args = ["train", "--data", str(data), "--arch", "resnet18", "--epochs", "1"]
    assert main([*args, "--img-size", "32", "--batch-size", "8", "--out", str(ckpt)]) == 0
    sidecar = json.loads(ckpt.with_suffix(".json").read_text())
    record = sidecar["preprocessing"]
    assert record["frame"] == "auto" and record["img_size"] == 32
    assert record["field_of_view"] == {"framed": 16}
    evaluate = ["evaluate", "--no-embedding", "--no-heatmap-scale", "--methods", "nero,msp"]
    evaluate += ["--model", str(ckpt), "--data", str(data)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*evaluate, "--out", str(tmp_path / "run")]) == 0
        manifest = read_run(tmp_path / "run").manifest["preprocessing"]
        assert {k: manifest[k] for k in ("frame", "img_size", "version")} == {
            "frame": "auto", "img_size": 32, "version": 1,
        }  # fmt: skip
        assert manifest["source"] == "sidecar"
        # fed differently from its training: refused before anything is computed
        assert main([*evaluate, "--frame", "none", "--out", str(tmp_path / "x")]) == 2
        assert not (tmp_path / "x").exists()
        # a checkpoint from before the record: today's plain resize, and the run says so
        old = tmp_path / "old"
        old.mkdir()
        shutil.copy(ckpt, old / "model.pt")
        del sidecar["preprocessing"]
        (old / "model.json").write_text(json.dumps(sidecar))
        evaluate[evaluate.index(str(ckpt))] = str(old / "model.pt")
        assert main([*evaluate, "--out", str(tmp_path / "old-run")]) == 0
    run = read_run(tmp_path / "old-run")
    assert run.manifest["preprocessing"]["frame"] == "none"
    assert run.manifest["preprocessing"]["source"] == "no record"
    assert any("no preprocessing record" in w for w in run.manifest["warnings"])
