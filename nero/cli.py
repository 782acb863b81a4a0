"""The ``nero`` command line (contract in DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from nero import DEFAULT_SEED, __version__
from nero.data.prepare import RECIPES
from nero.data.preprocess import DEFAULT_IMG_SIZE, FRAME_MODES
from nero.detect.params import PRESETS
from nero.explain.kinds import KINDS, kinds_help
from nero.model.extract import DEFAULT_BATCH_SIZE, ENGINES
from nero.model.train import AUGMENTATIONS
from nero.run.report import REPORT_FORMATS

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


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where the forward pass runs: this process, or Ray Data actors (docs/SCALING.md)",
    )
    parser.add_argument(
        "--address",
        help="the Ray cluster to join, e.g. 'auto' or ray://host:10001 (default: start a "
        "local one); only with --engine ray",
    )


def _check_engine_flags(args: argparse.Namespace) -> None:
    if args.address is not None and args.engine != "ray":
        raise ValueError("--address names a Ray cluster: it needs --engine ray")
    if args.engine == "ray":
        from nero.model.ray_engine import check_address

        check_address(args.address)


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
    ev.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ev.add_argument(
        "--nero-param",
        type=_nero_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one NERO parameter, e.g. epsilon=1e-6",
    )
    ev.add_argument("--img-size", type=int)
    ev.add_argument(
        "--frame",
        choices=FRAME_MODES,
        help="how the model sees each image (default: as its sidecar says it was trained)",
    )
    ev.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ev.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    ev.add_argument("--seed", type=int, default=DEFAULT_SEED)
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
    ev.add_argument(
        "--no-heatmap-scale",
        action="store_true",
        help="skip calibrating the heatmaps' colour scale on normal images (done on first use)",
    )
    ev.add_argument(
        "--no-recommend",
        action="store_true",
        help="skip estimating (from ID data alone) which method to trust on this model",
    )
    _engine_flags(ev)
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run at --out (removed only once the new one is complete)",
    )

    rn = sub.add_parser("runs", help="list the runs and abandoned .incomplete folders in a folder")
    rn.add_argument("root", nargs="?", type=Path, default=DEFAULT_RUNS_ROOT)
    rn.add_argument(
        "--clean",
        action="store_true",
        help="remove the abandoned .incomplete folders (never one a process is writing)",
    )

    rb = sub.add_parser("rebind", help="point a run at its model file after the file moved")
    rb.add_argument("run", type=Path)
    rb.add_argument("--model", type=Path, required=True)
    rb.add_argument(
        "--different-weights",
        action="store_true",
        help="accept a checkpoint whose weights differ from the run's (recorded as a warning)",
    )

    sc = sub.add_parser("score", help="score new images against a run, without refitting")
    sc.add_argument("--run", type=Path, required=True, help="a run made by nero evaluate")
    sc.add_argument("inputs", nargs="+", help="image or video files, folders, or glob patterns")
    sc.add_argument("--fps", type=float, default=5.0, help="frames per second taken from videos")
    sc.add_argument("--out", type=Path, help="CSV of one row per image (default: print it)")
    sc.add_argument("--into", metavar="NAME", help="also keep them in the run as batch NAME")
    sc.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    sc.add_argument("--device", default="cpu")
    _engine_flags(sc)

    rp = sub.add_parser("report", help="print the comparison of all methods in a run")
    rp.add_argument("run", type=Path)
    rp.add_argument("--format", choices=REPORT_FORMATS, default=REPORT_FORMATS[0])

    rv = sub.add_parser("reviews", help="export a run's review history as CSV")
    rv.add_argument("run", type=Path)
    rv.add_argument("--out", type=Path, help="write the CSV here (default: print it)")

    dm = sub.add_parser("demo", help="build the embedded synthetic-endoscopy demo run")
    dm.add_argument("--out", type=Path, default=DEFAULT_RUNS_ROOT / "demo")
    dm.add_argument("--quick", action="store_true", help="a tiny version for tests (< 60 s)")

    tr = sub.add_parser("train", help="train a classifier on a prepared folder's id_train")
    tr.add_argument("--data", type=Path, required=True)
    tr.add_argument("--arch", default="resnet18")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--img-size", type=int, default=DEFAULT_IMG_SIZE)
    tr.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    tr.add_argument("--lr", type=float, default=1e-4)
    tr.add_argument("--augment", choices=AUGMENTATIONS, default=AUGMENTATIONS[0])
    tr.add_argument(
        "--frame",
        choices=FRAME_MODES,
        default="auto",
        help="auto: the model sees tissue only, never the scope's frame or overlays (README); "
        "none: the plain square resize",
    )
    tr.add_argument("--val-fraction", type=float, default=0.1)
    tr.add_argument("--init-weights", type=Path, help="local pretrained weights (head replaced)")
    tr.add_argument("--device", default=None)
    tr.add_argument("--seed", type=int, default=DEFAULT_SEED)
    tr.add_argument("--out", type=Path, required=True)

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

    db = sub.add_parser("dashboard", help="start the Streamlit dashboard on 127.0.0.1")
    db.add_argument("run", nargs="?", type=Path, help="open this run (default: the demo run)")
    db.add_argument("--port", type=int, default=DEFAULT_PORT)
    db.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface to listen on (default: loopback only; see README: exposing the dashboard)",
    )
    db.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name browsers may use besides localhost (needed with --address)",
    )
    db.add_argument(
        "--no-auth",
        action="store_true",
        help="beyond loopback without OIDC sign-in: every page warns, reviews are unverified",
    )
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
        choices=KINDS,
        default=KINDS[0],
        help=kinds_help() + " (--target)",
    )
    hm.add_argument(
        "--target",
        type=int,
        help="class index (class: default predicted; ood/distance: default nearest centroid), "
        "or the neuron (neuron)",
    )
    hm.add_argument("--out", type=Path, required=True)
    return parser


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nero.detect.registry import parse_methods
    from nero.run.directory import read_run
    from nero.run.pipeline import Folders, evaluate_folders
    from nero.run.report import format_report

    if args.data and (args.id_train or args.id_test or args.ood):
        raise ValueError("use either --data or --id-train/--id-test/--ood")
    if not args.data and not (args.id_train and args.id_test and args.ood):
        raise ValueError(
            "give --data DIR, or --id-train, --id-test and at least one --ood NAME=DIR"
        )
    _check_engine_flags(args)
    folders = Folders(args.data, args.id_train, args.id_test, {k: Path(v) for k, v in args.ood})
    out = evaluate_folders(
        folders,
        args.out,
        checkpoint=args.model,
        arch=args.arch,
        img_size=args.img_size,
        frame=args.frame,
        trust_pickle=args.trust_pickle,
        embedding=None if args.no_embedding else "umap",
        heatmap_scale=not args.no_heatmap_scale,
        progress=lambda msg, _f: print(msg, flush=True) if msg.startswith("computing") else None,
        methods=parse_methods(args.methods),
        preset=args.preset,
        nero_params=dict(args.nero_param),
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        recommend=not args.no_recommend,
        engine=args.engine,
        address=args.address,
    )
    run = read_run(out)
    print(format_report(run, "table"))
    if "recommended" in run.report:
        rec = run.report["recommended"]
        print(
            f"\nrecommended for this model and data: {rec['method']} (mean AUROC "
            f"{rec['mean_proxy_auroc']:.1f} ± {rec['spread']:.1f} on ID-only proxies; "
            f"runner-up {rec['runner_up']}, {rec['margin']:.1f} behind)"
        )
    for warning in run.warnings:
        print(f"warning: {warning}")
    print(f"\nrun written to {out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from nero.run.directory import read_run
    from nero.run.new_data import expand_inputs, score_files, verdict_method

    _check_engine_flags(args)
    run = read_run(args.run)
    paths = expand_inputs(args.inputs)
    out = args.out
    if out is not None and out.exists():
        raise ValueError(f"--out {out} exists; nero score never replaces a file")
    printing = out is None and args.into is None
    if printing:
        import tempfile

        out = Path(tempfile.mkstemp(suffix=".csv")[1])
        out.unlink()
    result = score_files(
        run,
        paths,
        out,
        args.into,
        args.batch_size,
        args.device,
        fps=args.fps,
        engine=args.engine,
        address=args.address,
    )
    if printing:
        print(out.read_text(), end="")
        out.unlink()
    for path, error in result.failures.items():
        print(f"skipped {path}: {error}", file=sys.stderr)
    where = [str(p) for p in (args.out, result.batch) if p is not None]
    print(
        f"scored {result.rows} of {result.attempted} images (verdicts by {verdict_method(run)})"
        + (f"; written to {', '.join(where)}" if where else ""),
        file=sys.stderr if printing else sys.stdout,
    )
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from nero.run.directory import list_runs, read_run
    from nero.run.staging import OutputError, RunLockedError, abandoned_stages, remove_stage

    for path in list_runs(args.root):
        try:
            run = read_run(path)
            print(
                f"{path.name:30s} {run.manifest['model']['arch']:16s} {len(run.samples):7d} "
                f"samples  {run.manifest.get('created', '?')}"
            )
        except ValueError as exc:
            print(f"{path.name:30s} unreadable: {exc}")
    stages = abandoned_stages(args.root)
    for stage in stages:
        state = "being written now" if stage.locked else "abandoned"
        line = f"{stage.path.name:30s} {state}, {stage.size_bytes / 2**20:.1f} MiB"
        if args.clean and not stage.locked:
            try:
                remove_stage(stage)
                line += " — removed"
            except (OutputError, RunLockedError) as exc:
                line += f" — left in place: {exc}"
        print(line)
    if stages and not args.clean:
        print("(nero runs --clean removes the abandoned .incomplete folders)")
    return 0


def cmd_rebind(args: argparse.Namespace) -> int:
    from nero.run.checkpoint import rebind_model

    print(rebind_model(args.run, args.model, args.different_weights))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nero.run.directory import read_run
    from nero.run.report import format_report

    print(format_report(read_run(args.run), args.format))
    return 0


def cmd_reviews(args: argparse.Namespace) -> int:
    from nero.files import write_text
    from nero.run.directory import read_run
    from nero.run.reviews import reviews_csv

    text = reviews_csv(read_run(args.run))
    if args.out is None:
        print(text, end="")
    else:
        write_text(args.out, text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from nero.demo import build_demo, demo_code_paths
    from nero.run.directory import read_run
    from nero.run.report import format_report

    start = time.perf_counter()
    out = build_demo(args.out, quick=args.quick, progress=lambda msg, _f: print(f"[demo] {msg}"))
    print(format_report(read_run(out), "table"))
    print(f"\ndemo run at {out} ({time.perf_counter() - start:.0f} s); {demo_code_paths(out)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nero.model.train import TrainConfig, train_classifier

    config = TrainConfig(
        arch=args.arch,
        epochs=args.epochs,
        img_size=args.img_size,
        frame=args.frame,
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
    if info["unreadable"]:
        print(f"skipped {len(info['unreadable'])} unreadable images (listed in the sidecar JSON)")
    return 0


def cmd_heatmap(args: argparse.Namespace) -> int:
    import numpy as np

    from nero.explain.drawing import overlay_png
    from nero.explain.field_of_view import frame_share
    from nero.run.directory import read_run
    from nero.run.heatmap_scale import display_scale, run_heatmap_scale
    from nero.run.heatmap_view import heatmap_view
    from nero.run.heatmaps import run_heatmap, sample_image

    run = read_run(args.run)
    heat = run_heatmap(run, args.sample, args.kind, args.target)
    scale = run_heatmap_scale(run)  # calibrated on normal test images once, then stored
    view = heatmap_view(heat, scale)
    shown, factor = display_scale(heat.relevance, scale.pixel(heat.kind))
    overlay_png(
        sample_image(run, args.sample),
        heat,
        out=args.out,
        class_names=run.class_names,
        scale=shown,
        unusual=view.unusual,
    )
    frame = frame_share(heat.original(), np.asarray(sample_image(run, args.sample)))
    first, *rest = view.summary(frame, factor, of=f"sample {args.sample}")
    print(f"{args.out}: {first}")
    for line in rest:
        print(line)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    from nero.serve import access_mode, check_exposure, serve_dashboard

    check_exposure(args.address, args.allow_host)
    access_mode(args.address, args.no_auth)  # refused before a demo is built for nobody
    demo = args.runs_root / "demo"
    if args.run is None and not args.no_demo and not (demo / "manifest.json").is_file():
        from nero.demo import build_demo

        print("first start: building the demo run (a few minutes, once)", flush=True)
        build_demo(demo, progress=lambda msg, _f: print(f"[demo] {msg}", flush=True))
    return serve_dashboard(
        args.run, args.runs_root, args.port, args.address, args.allow_host, args.no_auth
    )


COMMANDS = {
    "evaluate": cmd_evaluate,
    "score": cmd_score,
    "runs": cmd_runs,
    "rebind": cmd_rebind,
    "report": cmd_report,
    "reviews": cmd_reviews,
    "demo": cmd_demo,
    "train": cmd_train,
    "prepare": cmd_prepare,
    "dashboard": cmd_dashboard,
    "heatmap": cmd_heatmap,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input ends in one line on stderr and exit code 2, never a traceback.

    An unexpected failure (a bug) ends in one line and exit code 1; ``NERO_DEBUG=1`` shows the
    traceback.
    """
    args = build_parser().parse_args(argv)
    format_before = warnings.formatwarning
    warnings.formatwarning = lambda message, *_a, **_k: (
        f"nero {args.command}: warning: {_one_line(message)}\n"
    )
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"nero {args.command}: interrupted (computed arrays are kept)", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, LookupError) as exc:
        if os.environ.get("NERO_DEBUG"):
            raise
        print(f"nero {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 — a bug: still one line, not a traceback
        if os.environ.get("NERO_DEBUG"):
            raise
        print(
            f"nero {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(run again with NERO_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.formatwarning = format_before


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
