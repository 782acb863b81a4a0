"""The ``nero`` command line (contract in DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from nero import __version__

DEFAULT_RUNS_ROOT = Path("runs")
DEFAULT_PORT = 8501


def _ood_pair(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--ood expects NAME=DIR, got {text!r}")
    return name, folder


def _nero_param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--nero-param expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nero", description="Explainable out-of-distribution detection (NERO)."
    )
    parser.add_argument("--version", action="version", version=f"nero {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="score ID and OOD folders, write a run directory")
    ev.add_argument("--model", help="checkpoint (.pt/.pth/.safetensors); omit for a random model")
    ev.add_argument(
        "--arch",
        help="torchvision architecture, e.g. resnet18 (default: from the "
        "checkpoint's sidecar JSON)",
    )
    ev.add_argument("--data", type=Path, help="prepared folder: id_train/ id_test/ ood/")
    ev.add_argument("--id-train", type=Path)
    ev.add_argument("--id-test", type=Path)
    ev.add_argument("--ood", type=_ood_pair, action="append", default=[], metavar="NAME=DIR")
    ev.add_argument("--methods", default="nero", help="comma list or 'all'")
    ev.add_argument("--preset", default="default", choices=["reference", "default"])
    ev.add_argument(
        "--nero-param",
        type=_nero_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one NERO parameter, e.g. epsilon=1e-6",
    )
    ev.add_argument("--img-size", type=int)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    ev.add_argument("--seed", type=int, default=42)
    ev.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading a fully pickled model (runs code from the file)",
    )
    ev.add_argument(
        "--no-embedding",
        action="store_true",
        help="skip the UMAP relevance map (the dashboard can compute it later)",
    )
    ev.add_argument("--out", type=Path, required=True)

    rp = sub.add_parser("report", help="print the comparison of all methods in a run")
    rp.add_argument("run", type=Path)
    rp.add_argument("--format", choices=["table", "markdown", "csv"], default="table")

    dm = sub.add_parser("demo", help="build the embedded synthetic-endoscopy demo run")
    dm.add_argument("--out", type=Path, default=DEFAULT_RUNS_ROOT / "demo")
    dm.add_argument("--quick", action="store_true", help="a tiny version for tests (< 60 s)")

    tr = sub.add_parser("train", help="train a classifier on a prepared folder's id_train")
    tr.add_argument("--data", type=Path, required=True)
    tr.add_argument("--arch", default="resnet18")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--img-size", type=int, default=224)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=1e-4)
    tr.add_argument("--augment", choices=["paper", "light", "none"], default="paper")
    tr.add_argument("--val-fraction", type=float, default=0.1)
    tr.add_argument("--init-weights", type=Path, help="local pretrained weights (head replaced)")
    tr.add_argument("--device", default=None)
    tr.add_argument("--seed", type=int, default=42)
    tr.add_argument("--out", type=Path, required=True)

    pp = sub.add_parser("prepare", help="Kvasir-v2 / GastroVision → the paper's ID/OOD layout")
    pp.add_argument("dataset", choices=["kvasir", "gastrovision"])
    pp.add_argument("--root", type=Path, required=True, help="the extracted data set")
    pp.add_argument("--out", type=Path, required=True)
    pp.add_argument("--test-fraction", type=float, default=0.2)
    pp.add_argument("--seed", type=int, default=42)
    pp.add_argument(
        "--id-classes",
        help="comma-separated in-distribution classes (default: the recipe's, see README)",
    )

    db = sub.add_parser("dashboard", help="start the Streamlit dashboard on 127.0.0.1")
    db.add_argument("run", nargs="?", type=Path, help="open this run (default: the demo run)")
    db.add_argument("--port", type=int, default=DEFAULT_PORT)
    db.add_argument("--runs-root", type=Path, default=DEFAULT_RUNS_ROOT)
    db.add_argument(
        "--no-demo",
        action="store_true",
        help="do not build the demo run when the runs root has none",
    )

    hm = sub.add_parser("heatmap", help="write an input-space LRP heatmap of one sample as PNG")
    hm.add_argument("--run", type=Path, required=True)
    hm.add_argument("--sample", type=int, required=True, help="row index in samples.csv")
    hm.add_argument(
        "--kind",
        choices=["class", "nero", "ood", "distance"],
        default="class",
        help="class: a class logit; nero: NERO's softmax-weighted relevance; "
        "ood: deviation from the nearest class centroid; distance: each neuron's share of "
        "NERO's distance to that centroid",
    )
    hm.add_argument(
        "--target",
        type=int,
        help="class index (class: default predicted; ood/distance: default nearest centroid)",
    )
    hm.add_argument("--out", type=Path, required=True)
    return parser


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from nero.data import explicit_collection, prepared_collection
    from nero.methods import parse_methods
    from nero.models import load_classifier
    from nero.pipeline import EvaluateConfig, evaluate
    from nero.report import format_report
    from nero.run import read_run
    from nero.sidecar import read_sidecar

    sidecar = read_sidecar(args.model) if args.model else {}
    arch = args.arch or sidecar.get("arch")
    if not arch:
        raise SystemExit("nero evaluate: --arch is required (no sidecar JSON next to the model)")
    img_size = args.img_size or sidecar.get("img_size") or 224
    if args.data:
        if args.id_train or args.id_test or args.ood:
            raise SystemExit("nero evaluate: use either --data or --id-train/--id-test/--ood")
        collection = prepared_collection(args.data)
        masks = args.data / "masks"
        masks_root, data_root = (masks, args.data) if masks.is_dir() else (None, None)
    else:
        if not (args.id_train and args.id_test and args.ood):
            raise SystemExit(
                "nero evaluate: give --data DIR, or --id-train, --id-test and "
                "at least one --ood NAME=DIR"
            )
        collection = explicit_collection(
            args.id_train, args.id_test, dict(args.ood), sidecar.get("class_names")
        )
        masks_root = data_root = None
    torch.manual_seed(args.seed)  # a model without a checkpoint is random: make it repeatable
    model = load_classifier(
        arch, args.model, len(collection.class_names), img_size, args.trust_pickle
    )
    config = EvaluateConfig(
        arch=arch,
        img_size=img_size,
        batch_size=args.batch_size,
        device=args.device,
        methods=parse_methods(args.methods),
        preset=args.preset,
        nero_params=dict(args.nero_param),
        seed=args.seed,
        checkpoint=str(args.model) if args.model else None,
        masks_root=masks_root,
    )
    out = evaluate(collection, model, config, args.out, data_root=data_root)
    if not args.no_embedding:
        from nero.embedding import ensure_embedding

        print("computing the relevance map (UMAP) for the dashboard", flush=True)
        ensure_embedding(out)
    print(format_report(read_run(out), "table"))
    print(f"\nrun written to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nero.report import format_report
    from nero.run import read_run

    print(format_report(read_run(args.run), args.format))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from nero.demo import build_demo
    from nero.report import format_report
    from nero.run import read_run

    start = time.perf_counter()
    out = build_demo(args.out, quick=args.quick, progress=lambda msg, _f: print(f"[demo] {msg}"))
    print(format_report(read_run(out), "table"))
    print(f"\ndemo run at {out} ({time.perf_counter() - start:.0f} s)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nero.train import TrainConfig, train_classifier

    config = TrainConfig(
        arch=args.arch,
        epochs=args.epochs,
        img_size=args.img_size,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=args.augment,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
    )
    info = train_classifier(args.data, args.out, config, init_weights=args.init_weights)
    print(
        f"saved {args.out} (best epoch {info['best_epoch']}, "
        f"validation accuracy {info['val_accuracy']:.2f} %) and its sidecar JSON"
    )
    return 0


def cmd_heatmap(args: argparse.Namespace) -> int:
    from nero.heatmaps import overlay_png, run_heatmap, sample_image
    from nero.run import read_run

    run = read_run(args.run)
    heat = run_heatmap(run, args.sample, args.kind, args.target)
    overlay_png(sample_image(run, args.sample), heat, out=args.out, class_names=run.class_names)
    print(
        f"{args.out}: {heat.kind} heatmap of sample {args.sample}, {heat.method} "
        f"({heat.rule_set}), conservation {heat.conservation:.3g}"
    )
    if heat.method == "gradient×input":
        print(f"note: {heat.note}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from nero.prepare import prepare

    id_classes = [c.strip() for c in args.id_classes.split(",")] if args.id_classes else None
    out = prepare(args.dataset, args.root, args.out, args.test_fraction, args.seed, id_classes)
    manifest = json.loads((out / "manifest.json").read_text())
    for cls, n in manifest["counts"].items():
        print(f"  {cls:55s} {n}")
    if manifest["skipped_non_images"]:
        print(f"skipped {len(manifest['skipped_non_images'])} non-image files (see manifest)")
    print(f"prepared {args.dataset} at {out} ({', '.join(manifest['file_mode'])})")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from nero.serve import serve_dashboard

    demo = args.runs_root / "demo"
    if args.run is None and not args.no_demo and not (demo / "manifest.json").is_file():
        from nero.demo import build_demo

        print("first start: building the demo run (a few minutes, once)", flush=True)
        build_demo(demo, progress=lambda msg, _f: print(f"[demo] {msg}", flush=True))
    return serve_dashboard(args.run, args.runs_root, args.port)


COMMANDS = {
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "demo": cmd_demo,
    "train": cmd_train,
    "prepare": cmd_prepare,
    "dashboard": cmd_dashboard,
    "heatmap": cmd_heatmap,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"nero {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
