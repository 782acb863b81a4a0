"""`nero prepare` on generated fake Kvasir / GastroVision trees with the real folder names."""

import json

import pytest
from PIL import Image

from nero.cli import main
from nero.data.folders import DataError, prepared_collection
from nero.data.prepare import GASTROVISION_CLASSES, KVASIR_CLASSES, KVASIR_ID, prepare


def fake_tree(root, classes, per=10, nest=None):
    base = root / nest if nest else root
    for i, cls in enumerate(classes):
        d = base / cls
        d.mkdir(parents=True)
        for j in range(per + i):
            Image.new("RGB", (8, 8), (i * 20, j, 0)).save(d / f"{cls[:3]}_{j}.jpg")
    return root


def test_kvasir_split_is_stratified_seeded_disjoint(tmp_path):
    root = fake_tree(tmp_path / "kvasir", KVASIR_CLASSES, nest="kvasir-dataset-v2")
    (root / "kvasir-dataset-v2" / "polyps" / "Thumbs.db").write_text("x")
    a = prepare("kvasir", root, tmp_path / "a", seed=42)
    b = prepare("kvasir", root, tmp_path / "b", seed=42)
    c = prepare("kvasir", root, tmp_path / "c", seed=7)
    names = lambda p, s: sorted(str(x.relative_to(p / s)) for x in (p / s).rglob("*.jpg"))  # noqa: E731
    assert names(a, "id_test") == names(b, "id_test") != names(c, "id_test")
    assert not set(names(a, "id_train")) & set(names(a, "id_test"))
    m = json.loads((a / "manifest.json").read_text())
    for cls in KVASIR_ID:  # 20 % of each class in test
        n = m["counts"][cls]
        assert n["id_test"] == round(0.2 * (n["id_train"] + n["id_test"]))
    assert sorted(p.name for p in (a / "id_train").iterdir()) == sorted(KVASIR_ID)
    ood = sorted(p.name for p in (a / "ood").iterdir())
    assert ood == sorted(["all", *(set(KVASIR_CLASSES) - set(KVASIR_ID))])
    n_ood = sum(m["counts"][c]["ood"] for c in m["ood_classes"])
    assert len(list((a / "ood" / "all").rglob("*.jpg"))) == n_ood
    assert m["skipped_non_images"] and m["skipped_non_images"][0].endswith("Thumbs.db")
    col = prepared_collection(a)  # what `nero evaluate --data` reads
    assert col.class_names == sorted(KVASIR_ID)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda r: __import__("shutil").rmtree(r / "polyps"),
            r"missing class folders \['polyps'\]",
        ),
        (lambda r: (r / "extra-class").mkdir(), r"unexpected folders \['extra-class'\]"),
        (lambda r: [f.unlink() for f in (r / "esophagitis").iterdir()], "contains no images"),
        (lambda r: (r / "normal-cecum" / "sub").mkdir(), r"contains sub-folders \['sub'\]"),
    ],
)
def test_bad_layouts_give_clear_messages(tmp_path, damage, message):
    root = fake_tree(tmp_path / "kvasir", KVASIR_CLASSES, per=3)
    damage(root)
    with pytest.raises(DataError, match=message):
        prepare("kvasir", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gastrovision_default_and_custom_id_classes(tmp_path, capsys):
    root = fake_tree(tmp_path / "gv", GASTROVISION_CLASSES, per=3)
    assert main(["prepare", "gastrovision", "--root", str(root), "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert len(m["id_classes"]) == 11 and len(m["ood_classes"]) == 16
    out2 = tmp_path / "o2"
    code = main(
        [
            "prepare",
            "gastrovision",
            "--root",
            str(root),
            "--out",
            str(out2),
            "--id-classes",
            "Pylorus,Normal stomach,Barretts esophagus",
        ]
    )
    assert code == 0
    m2 = json.loads((out2 / "manifest.json").read_text())
    assert m2["id_classes"] == ["Pylorus", "Normal stomach", "Barrett's esophagus"]
    assert (
        main(
            [
                "prepare",
                "gastrovision",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "o3"),
                "--id-classes",
                "Nope",
            ]
        )
        == 2
    )
    assert "are not gastrovision classes" in capsys.readouterr().err


def test_refuses_non_empty_out(tmp_path):
    root = fake_tree(tmp_path / "k", KVASIR_CLASSES, per=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        prepare("kvasir", root, tmp_path / "out")
    assert (tmp_path / "out" / "x").read_text() == "keep me"
