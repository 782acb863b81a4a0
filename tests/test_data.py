"""Class-folder data sets and the dataset that never raises on a bad image."""

import numpy as np
import pytest
from PIL import Image

from nero.data.folders import DataError, ImageListDataset, prepared_collection
from nero.data.images import read_image
from nero.data.preprocess import Preprocessing


def test_odd_image_modes_become_rgb(tmp_path):
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "g16.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    Image.new("L", (8, 8), 77).save(tmp_path / "gray.jpg")
    Image.new("P", (8, 8)).save(tmp_path / "pal.gif")
    Image.new("CMYK", (8, 8)).save(tmp_path / "cmyk.jpg")
    for name in ("g16.png", "rgba.png", "gray.jpg", "pal.gif", "cmyk.jpg"):
        img = read_image(tmp_path / name)
        assert img.mode == "RGB" and img.size == (8, 8)
    assert read_image(tmp_path / "g16.png").getpixel((0, 0)) == (255, 255, 255)
    # alpha composited on black: half-transparent red → half red
    assert read_image(tmp_path / "rgba.png").getpixel((0, 0))[0] in (127, 128)


def test_truncated_and_fake_images_are_reported_not_raised(tmp_path):
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "fake.png").write_text("hello")
    ds = ImageListDataset(
        [tmp_path / n for n in ("ok.jpg", "cut.jpg", "fake.png")], Preprocessing(16, "none")
    )
    assert ds[0][2] == ""
    for i in (1, 2):
        tensor, index, err, note = ds[i]
        assert err and not note and index == i and tensor.shape == (3, 16, 16)
    assert "cut.jpg" in ds[1][2] and "fake.png" in ds[2][2]


def _tree(root, classes=("a", "b"), per=2):
    for split in ("id_train", "id_test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per):
                Image.new("RGB", (8, 8)).save(root / split / c / f"{i}.png")
    (root / "ood" / "x" / "deep").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "ood" / "x" / "deep" / "0.png")


def test_prepared_layout(tmp_path):
    _tree(tmp_path)
    (tmp_path / "id_train" / "a" / "notes.txt").write_text("stray file")
    col = prepared_collection(tmp_path)
    assert col.class_names == ["a", "b"]
    assert [s.name for s in col.splits] == ["id_train", "id_test", "ood:x"]
    assert col.labels.tolist() == [0, 0, 1, 1, 0, 0, 1, 1, -1]
    assert all(p.suffix == ".png" for p in col.paths)


def test_bad_layouts_are_named(tmp_path):
    with pytest.raises(DataError, match="is missing"):
        prepared_collection(tmp_path)
    _tree(tmp_path)
    (tmp_path / "id_test" / "c").mkdir()
    with pytest.raises(DataError, match=r"unexpected \['c'\]"):
        prepared_collection(tmp_path)
    (tmp_path / "id_test" / "c").rmdir()
    for f in (tmp_path / "id_train" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="id_train/b contains no images"):
        prepared_collection(tmp_path)
