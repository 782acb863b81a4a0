"""Kvasir-v2 and GastroVision → the paper's in-distribution / OOD protocol (prepared layout).

``nero prepare kvasir --root DIR --out DIR`` validates the class folders by name, splits the
in-distribution classes stratified and seeded into ``id_train``/``id_test``, and lays the
remaining classes out as OOD sets: all of them together (``ood/all``) and one set per class.
Files are hard links (or symlinks, or copies where neither works), never re-encoded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nero.data.folders import DataError
from nero.data.images import IMAGE_SUFFIXES

KVASIR_CLASSES = (
    "dyed-lifted-polyps",
    "dyed-resection-margins",
    "esophagitis",
    "normal-cecum",
    "normal-pylorus",
    "normal-z-line",
    "polyps",
    "ulcerative-colitis",
)
# The paper: "3 in-distribution classes" of Kvasir — the normal anatomy (spec §7).
KVASIR_ID = ("normal-cecum", "normal-pylorus", "normal-z-line")

GASTROVISION_CLASSES = (
    "Accessory tools",
    "Angiectasia",
    "Barrett's esophagus",
    "Blood in lumen",
    "Cecum",
    "Colon diverticula",
    "Colon polyps",
    "Colorectal cancer",
    "Duodenal bulb",
    "Dyed-lifted-polyps",
    "Dyed-resection-margins",
    "Erythema",
    "Esophageal varices",
    "Esophagitis",
    "Gastric polyps",
    "Gastroesophageal_junction_normal z-line",
    "Ileocecal valve",
    "Mucosal inflammation large bowel",
    "Normal esophagus",
    "Normal mucosa and vascular pattern in the large bowel",
    "Normal stomach",
    "Pylorus",
    "Resected polyps",
    "Resection margins",
    "Retroflex rectum",
    "Small bowel_terminal ileum",
    "Ulcer",
)
# The paper uses 11 in-distribution GastroVision classes without listing them. Ours: the ten
# normal anatomical landmarks / normal mucosa classes (the same principle as Kvasir: normal
# anatomy is in-distribution) plus accessory tools, which are no pathology and appear in
# routine frames; every pathological or post-intervention finding is OOD.
GASTROVISION_ID = (
    "Accessory tools",
    "Cecum",
    "Duodenal bulb",
    "Gastroesophageal_junction_normal z-line",
    "Ileocecal valve",
    "Normal esophagus",
    "Normal mucosa and vascular pattern in the large bowel",
    "Normal stomach",
    "Pylorus",
    "Retroflex rectum",
    "Small bowel_terminal ileum",
)


@dataclass(frozen=True)
class Recipe:
    name: str
    classes: tuple[str, ...]
    id_classes: tuple[str, ...]


RECIPES = {
    "kvasir": Recipe("kvasir", KVASIR_CLASSES, KVASIR_ID),
    "gastrovision": Recipe("gastrovision", GASTROVISION_CLASSES, GASTROVISION_ID),
}


def _key(name: str) -> str:
    """Folder names compared without case, punctuation or spacing ("Barretts" = "Barrett's")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _find_class_root(root: Path, classes: Sequence[str]) -> Path:
    """``root`` itself, or its single sub-folder when the archive added one level."""
    if not root.is_dir():
        raise DataError(f"--root {root} does not exist or is not a folder")
    wanted = {_key(c) for c in classes}
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not {_key(p.name) for p in subdirs} & wanted and len(subdirs) == 1:
        return _find_class_root(subdirs[0], classes)
    return root


def scan_classes(root: Path, recipe: Recipe) -> tuple[dict[str, list[Path]], list[str]]:
    """Images per expected class; clear errors for missing/extra/empty/nested folders."""
    root = _find_class_root(Path(root), recipe.classes)
    by_key = {_key(p.name): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    expected = {_key(c): c for c in recipe.classes}
    missing = [c for k, c in expected.items() if k not in by_key]
    extra = sorted(p.name for k, p in by_key.items() if k not in expected)
    if missing or extra:
        raise DataError(
            f"{root} does not look like {recipe.name}: missing class folders {missing}, "
            f"unexpected folders {extra} (expected exactly: {list(recipe.classes)})"
        )
    images: dict[str, list[Path]] = {}
    skipped: list[str] = []
    for k, cls in expected.items():
        folder = by_key[k]
        nested = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if nested:
            raise DataError(
                f"class folder {folder} contains sub-folders {nested}; {recipe.name} class "
                "folders hold images directly — is --root pointing at the right level?"
            )
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        imgs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if not imgs:
            raise DataError(f"class folder {folder} contains no images")
        images[cls] = imgs
    return images, skipped


def _place(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        pass
    try:
        dst.symlink_to(src.resolve())
        return "symlink"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def _safe(name: str) -> str:
    """A folder name without characters that trouble shells and URLs."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower()


def prepare(
    dataset: str,
    root: str | Path,
    out: str | Path,
    test_fraction: float = 0.2,
    seed: int = 42,
    id_classes: Sequence[str] | None = None,
) -> Path:
    """Write the prepared layout for ``dataset`` (``kvasir`` | ``gastrovision``) to ``out``."""
    if dataset not in RECIPES:
        raise DataError(f"unknown data set {dataset!r}; choose from {sorted(RECIPES)}")
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    recipe = RECIPES[dataset]
    chosen = tuple(id_classes) if id_classes else recipe.id_classes
    known = {_key(c): c for c in recipe.classes}
    unknown = [c for c in chosen if _key(c) not in known]
    if unknown:
        raise DataError(f"--id-classes {unknown} are not {dataset} classes: {list(recipe.classes)}")
    chosen = tuple(known[_key(c)] for c in chosen)
    images, skipped = scan_classes(Path(root), recipe)

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"--out {out} exists and is not empty; choose a new folder")
    stage = out.with_name(out.name + ".incomplete")
    shutil.rmtree(stage, ignore_errors=True)
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    modes: set[str] = set()
    for cls in chosen:  # stratified: every class split with the same fraction
        files = images[cls]
        order = rng.permutation(len(files))
        n_test = max(1, round(test_fraction * len(files))) if len(files) > 1 else 0
        test = set(order[:n_test].tolist())
        for i, src in enumerate(files):
            split = "id_test" if i in test else "id_train"
            modes.add(_place(src, stage / split / _safe(cls) / src.name))
        counts[cls] = {"id_train": len(files) - n_test, "id_test": n_test}
    ood_classes = [c for c in recipe.classes if c not in chosen]
    for cls in ood_classes:
        for src in images[cls]:
            modes.add(_place(src, stage / "ood" / "all" / _safe(cls) / src.name))
            modes.add(_place(src, stage / "ood" / _safe(cls) / src.name))
        counts[cls] = {"ood": len(images[cls])}
    manifest = {
        "source": dataset,
        "root": str(Path(root).resolve()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "test_fraction": test_fraction,
        "id_classes": list(chosen),
        "id_folders": [_safe(c) for c in chosen],
        "ood_classes": ood_classes,
        "ood_sets": ["all", *(_safe(c) for c in ood_classes)],
        "counts": counts,
        "skipped_non_images": skipped,
        "file_mode": sorted(modes),
    }
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    stage.rename(out)
    return out
