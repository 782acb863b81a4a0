"""Making a model and its data: ``nero prepare`` and ``nero train``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from nero import DEFAULT_SEED
from nero.data.prepare import RECIPES
from nero.data.preprocess import FRAME_MODES
from nero.model.train import AUGMENTATIONS, TrainConfig

DEFAULTS = TrainConfig()


def add(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train a classifier on a prepared folder's id_train")
    tr.add_argument("--data", type=Path, required=True)
    tr.add_argument("--arch", default=DEFAULTS.arch)
    tr.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    tr.add_argument("--img-size", type=int, default=DEFAULTS.img_size)
    tr.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    tr.add_argument("--lr", type=float, default=DEFAULTS.lr)
    tr.add_argument("--augment", choices=AUGMENTATIONS, default=DEFAULTS.augment)
    tr.add_argument(
        "--frame",
        choices=FRAME_MODES,
        default=DEFAULTS.frame,
        help="auto: the model sees tissue only, never the scope's frame or overlays (README); "
        "none: the plain square resize",
    )
    tr.add_argument("--val-fraction", type=float, default=DEFAULTS.val_fraction)
    tr.add_argument("--init-weights", type=Path, help="local pretrained weights (head replaced)")
    tr.add_argument("--device", default=DEFAULTS.device)
    tr.add_argument("--seed", type=int, default=DEFAULTS.seed)
    tr.add_argument("--out", type=Path, required=True)
    tr.set_defaults(handler=train)

    pp = sub.add_parser("prepare", help="Kvasir-v2 / GastroVision → the paper's ID/OOD layout")
    pp.add_argument("dataset", choices=sorted(RECIPES))
    pp.add_argument("--root", type=Path, required=True, help="the extracted data set")
    pp.add_argument("--out", type=Path, required=True)
    pp.add_argument("--test-fraction", type=float, default=0.2)
    pp.add_argument("--seed", type=int, default=DEFAULT_SEED)
    pp.add_argument(
        "--id-classes",
        help="comma-separated in-distribution classes (default: the recipe's, see README)",
    )
    pp.set_defaults(handler=prepare)


def train(args: argparse.Namespace) -> int:
    from nero.model.train import train_classifier

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}  # fmt: skip
    config = TrainConfig(**given)
    info = train_classifier(args.data, args.out, config, init_weights=args.init_weights)
    print(
        f"saved {args.out} (best epoch {info['best_epoch']}, "
        f"validation accuracy {info['val_accuracy']:.2f} %) and its sidecar JSON"
    )
    if info["unreadable"]:
        print(f"skipped {len(info['unreadable'])} unreadable images (listed in the sidecar JSON)")
    return 0


def prepare(args: argparse.Namespace) -> int:
    from nero.data.prepare import prepare

    id_classes = [c.strip() for c in args.id_classes.split(",")] if args.id_classes else None
    out = prepare(args.dataset, args.root, args.out, args.test_fraction, args.seed, id_classes)
    manifest = json.loads((out / "manifest.json").read_text())
    for cls, n in manifest["counts"].items():
        print(f"  {cls:55s} {n}")
    if manifest["skipped_non_images"]:
        print(f"skipped {len(manifest['skipped_non_images'])} non-image files (see manifest)")
    print(f"prepared {args.dataset} at {out} ({', '.join(manifest['file_mode'])})")
    return 0
