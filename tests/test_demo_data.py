"""Tests for the synthetic endoscopy benchmark generator (tiny configs, fast)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nero.data.demo_data import (
    FAR_OOD_KINDS,
    FOV_RADIUS_FRAC,
    ID_CLASSES,
    NEAR_OOD_KINDS,
    DemoConfig,
    demo_data_is_complete,
    fov_mask,
    generate_demo_data,
    insert_artefact,
    render_scene,
)

TINY = DemoConfig(size=64, n_train_per_class=4, n_test_per_class=2, n_ood_per_kind=4, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_data(tmp_path_factory.mktemp("demo") / "data", TINY)


def test_same_seed_gives_identical_bytes(tiny_data: Path, tmp_path: Path) -> None:
    again = generate_demo_data(tmp_path / "again", TINY)
    assert _files(again) == _files(tiny_data)


def test_different_seed_gives_different_images(tiny_data: Path, tmp_path: Path) -> None:
    other = generate_demo_data(tmp_path / "other", DemoConfig(**{**TINY.__dict__, "seed": 4}))
    a, b = _files(tiny_data), _files(other)
    assert a.keys() == b.keys()
    images = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != b[k] for k in images)


def test_rng_does_not_depend_on_generation_order(tiny_data: Path, tmp_path: Path) -> None:
    # Fewer images per class: the shared ones must still be byte-identical.
    small = DemoConfig(**{**TINY.__dict__, "n_train_per_class": 2, "n_ood_per_kind": 1})
    other = generate_demo_data(tmp_path / "small", small)
    for rel in [
        "id_train/cecum/cecum_00001.jpg",
        "ood/polyp/polyp_00000.jpg",
        "masks/ood/polyp/polyp_00000.png",
        "id_test/z-line/z-line_00001.jpg",
    ]:
        assert (other / rel).read_bytes() == (tiny_data / rel).read_bytes()


def test_layout_and_split_sizes(tiny_data: Path) -> None:
    assert sorted(p.name for p in (tiny_data / "id_train").iterdir()) == sorted(ID_CLASSES)
    assert sorted(p.name for p in (tiny_data / "id_test").iterdir()) == sorted(ID_CLASSES)
    kinds = NEAR_OOD_KINDS + FAR_OOD_KINDS
    assert sorted(p.name for p in (tiny_data / "ood").iterdir()) == sorted(kinds)
    for cls in ID_CLASSES:
        train = sorted(p.name for p in (tiny_data / "id_train" / cls).iterdir())
        assert train == [f"{cls}_{i:05d}.jpg" for i in range(TINY.n_train_per_class)]
        assert len(list((tiny_data / "id_test" / cls).glob("*.jpg"))) == TINY.n_test_per_class
    for kind in kinds:
        assert len(list((tiny_data / "ood" / kind).glob("*.jpg"))) == TINY.n_ood_per_kind
    for path in tiny_data.rglob("*.jpg"):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (TINY.size, TINY.size)
    # Nothing but the dataset: no tmp or old folders left next to it.
    assert [p.name for p in tiny_data.parent.iterdir()] == [tiny_data.name]


def test_manifest(tiny_data: Path) -> None:
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert manifest["source"] == "nero-synthetic-endoscopy"
    assert manifest["version"] == 2
    assert manifest["seed"] == TINY.seed
    assert manifest["size"] == TINY.size
    assert manifest["artefact_scale"] == TINY.artefact_scale
    assert manifest["classes"] == sorted(ID_CLASSES) == list(ID_CLASSES)
    assert manifest["ood_kinds"] == {"near": list(NEAR_OOD_KINDS), "far": list(FAR_OOD_KINDS)}
    counts = manifest["counts"]
    assert counts["id_train"] == {c: TINY.n_train_per_class for c in ID_CLASSES}
    assert counts["id_test"] == {c: TINY.n_test_per_class for c in ID_CLASSES}
    assert counts["ood"] == {k: TINY.n_ood_per_kind for k in NEAR_OOD_KINDS + FAR_OOD_KINDS}
    backgrounds = manifest["near_ood_background"]
    assert len(backgrounds) == len(NEAR_OOD_KINDS) * TINY.n_ood_per_kind
    assert set(backgrounds.values()) <= set(ID_CLASSES)


def test_masks_align_with_near_ood_images(tiny_data: Path) -> None:
    fov = fov_mask(TINY.size)
    for kind in NEAR_OOD_KINDS:
        images = sorted((tiny_data / "ood" / kind).glob("*.jpg"))
        masks = sorted((tiny_data / "masks" / "ood" / kind).glob("*.png"))
        assert [m.stem for m in masks] == [i.stem for i in images]
        for mask_path in masks:
            with Image.open(mask_path) as im:
                assert im.format == "PNG" and im.size == (TINY.size, TINY.size)
                mask = np.asarray(im)
            assert mask.dtype == np.uint8 and mask.ndim == 2
            assert set(np.unique(mask)) <= {0, 255}
            inside = mask == 255
            assert inside.any(), f"empty mask {mask_path}"
            assert not (inside & ~fov).any(), f"mask leaves the FOV: {mask_path}"
    for kind in FAR_OOD_KINDS:
        assert not (tiny_data / "masks" / "ood" / kind).exists()
    assert not (tiny_data / "masks" / "id_train").exists()


def test_id_images_have_black_border_far_ood_does_not(tiny_data: Path) -> None:
    # Right-hand corners: the overlays (text, marker) sit on the left, as on real frames.
    corner = np.zeros((TINY.size, TINY.size), bool)
    corner[:4, -4:] = corner[-4:, -4:] = True
    for path in (tiny_data / "id_train").rglob("*.jpg"):
        assert np.asarray(Image.open(path))[corner].max() < 20
    far = [
        np.asarray(Image.open(p))[corner].mean()
        for p in (tiny_data / "ood").glob(f"{FAR_OOD_KINDS[0]}/*.jpg")
    ]
    assert min(far) > 20


def test_is_complete(tiny_data: Path) -> None:
    assert demo_data_is_complete(tiny_data, TINY)
    assert not demo_data_is_complete(tiny_data, DemoConfig(**{**TINY.__dict__, "seed": 9}))
    assert not demo_data_is_complete(tiny_data, DemoConfig(**{**TINY.__dict__, "size": 96}))
    bigger = DemoConfig(**{**TINY.__dict__, "n_ood_per_kind": 5})
    assert not demo_data_is_complete(tiny_data, bigger)
    harder = DemoConfig(**{**TINY.__dict__, "artefact_scale": 0.5})
    assert not demo_data_is_complete(tiny_data, harder)
    assert not demo_data_is_complete(tiny_data.parent / "missing", TINY)


def test_missing_file_makes_incomplete(tmp_path: Path) -> None:
    out = generate_demo_data(tmp_path / "data", TINY)
    (out / "masks" / "ood" / "polyp" / "polyp_00001.png").unlink()
    assert not demo_data_is_complete(out, TINY)
    # Regenerating repairs it in place.
    generate_demo_data(out, TINY)
    assert demo_data_is_complete(out, TINY)


def test_interrupted_run_is_not_complete(tmp_path: Path) -> None:
    out = tmp_path / "data"

    def stop(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_demo_data(out, TINY, progress=stop)
    assert not out.exists()
    assert not demo_data_is_complete(out, TINY)
    assert list(tmp_path.iterdir()) == []  # the tmp folder was cleaned up


def test_leftover_tmp_folder_is_not_complete(tiny_data: Path, tmp_path: Path) -> None:
    # A killed run leaves a finished-looking tmp folder behind (even with a manifest).
    dead_pid = 2**22 + 12345  # above the default pid_max, so no live process has it
    tmp = tmp_path / f"data.tmp-{dead_pid}"
    os.rename(generate_demo_data(tmp_path / "staging", TINY), tmp)
    out = tmp_path / "data"
    assert not demo_data_is_complete(out, TINY)
    generate_demo_data(out, TINY)
    assert demo_data_is_complete(out, TINY)
    assert not tmp.exists(), "stale tmp folder of a dead process should be removed"


def test_progress_reports_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_demo_data(tmp_path / "data", TINY, progress=lambda d, t: calls.append((d, t)))
    kinds = len(NEAR_OOD_KINDS) + len(FAR_OOD_KINDS)
    total = 3 * (TINY.n_train_per_class + TINY.n_test_per_class) + kinds * TINY.n_ood_per_kind
    assert calls == [(i, total) for i in range(1, total + 1)]
    calls.clear()
    generate_demo_data(tmp_path / "data", TINY, progress=lambda d, t: calls.append((d, t)))
    assert calls == []  # complete data is reused, not regenerated


def test_refuses_to_replace_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        generate_demo_data(out, TINY)
    assert (out / "precious.txt").exists()


def test_render_and_insert_api() -> None:
    rng = np.random.default_rng(0)
    fov = fov_mask(96)
    yy, xx = (np.mgrid[:96, :96] - 47.5) / (FOV_RADIUS_FRAC * 96)
    # Outside the widest field of view (the octagon) plus the lens blur it must be black.
    margin = 2 / (FOV_RADIUS_FRAC * 96)
    far_outside = (np.maximum(np.abs(xx), np.abs(yy)) > 1.06 + margin) | (
        np.abs(xx) + np.abs(yy) > 1.4 + 1.5 * margin
    )
    for cls in ID_CLASSES:
        img = render_scene(cls, rng, 96)
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert img[far_outside].max() < 10 and img[fov].mean() > 40
    for kind in NEAR_OOD_KINDS:
        for scale in (0.5, 1.0, 1.5):
            base = render_scene(ID_CLASSES[0], rng, 96)
            out, mask = insert_artefact(base, kind, rng, scale)
            assert out.shape == base.shape and out.dtype == np.uint8
            assert mask.dtype == bool and mask.shape == (96, 96)
            assert mask.any() and not (mask & ~fov).any()
            # The image changes inside the mask.
            diff = np.abs(out.astype(int) - base.astype(int)).sum(axis=2)
            assert diff[mask].mean() > 1.0
    with pytest.raises(ValueError):
        render_scene("colon", rng, 64)
    with pytest.raises(ValueError):
        insert_artefact(render_scene("cecum", rng, 64), "tattoo", rng)


def test_artefact_area_in_range() -> None:
    # Default scale: typical artefact area 3-15 % of the FOV; heavy bowel content far more
    # than the little content normal frames carry (1-5 %).
    fov_area = fov_mask(128).sum()
    rng = np.random.default_rng(1)
    heavy = [
        insert_artefact(render_scene("cecum", rng, 128), "bowel-content", rng)[1].sum() / fov_area
        for _ in range(12)
    ]
    assert 0.12 < float(np.median(heavy)) < 0.4, heavy
    for kind in (k for k in NEAR_OOD_KINDS if k != "bowel-content"):
        rng = np.random.default_rng(1)
        areas = [
            insert_artefact(render_scene("pylorus", rng, 128), kind, rng)[1].sum() / fov_area
            for _ in range(12)
        ]
        assert 0.02 < float(np.median(areas)) < 0.16, (kind, areas)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DemoConfig(size=8)
    with pytest.raises(ValueError):
        DemoConfig(artefact_scale=0)
    with pytest.raises(ValueError):
        DemoConfig(n_ood_per_kind=-1)
