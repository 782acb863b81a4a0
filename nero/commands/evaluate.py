"""``nero evaluate``: score ID and OOD folders, write a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from nero import DEFAULT_BATCH_SIZE, DEFAULT_SEED
from nero.commands.flags import check_engine_flags, engine_flags, nero_param, ood_pair, switch
from nero.data.preprocess import FRAME_MODES
from nero.detect.params import PRESETS

OVERWRITE = "replace an existing run at --out (removed only once the new one is complete)"
SKIPPABLE = {  # --no-X flag: what it skips
    "embedding": "skip the UMAP relevance map (the dashboard can compute it later)",
    "heatmap-scale": "skip calibrating the heatmaps' colour scale on normal images "
    "(done on first use)",
    "recommend": "skip estimating (from ID data alone) which method to trust on this model",
}


def add(sub: argparse._SubParsersAction) -> None:
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
    ev.add_argument("--ood", type=ood_pair, action="append", default=[], metavar="NAME=DIR")
    ev.add_argument("--methods", default="nero", help="comma list or 'all'")
    ev.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ev.add_argument(
        "--nero-param",
        type=nero_param,
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
    switch(ev, "--trust-pickle", "allow loading a fully pickled model (runs code from the file)")
    for name, words in SKIPPABLE.items():
        switch(ev, f"--no-{name}", words)
    engine_flags(ev)
    ev.add_argument("--out", type=Path, required=True)
    switch(ev, "--overwrite", OVERWRITE)
    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nero.detect.registry import parse_methods
    from nero.run.directory import read_run
    from nero.run.pipeline import EvaluationRequest, Folders, evaluate_request
    from nero.run.report import format_report

    if args.data and (args.id_train or args.id_test or args.ood):
        raise ValueError("use either --data or --id-train/--id-test/--ood")
    if not args.data and not (args.id_train and args.id_test and args.ood):
        raise ValueError(
            "give --data DIR, or --id-train, --id-test and at least one --ood NAME=DIR"
        )
    check_engine_flags(args)
    folders = Folders(args.data, args.id_train, args.id_test, {k: Path(v) for k, v in args.ood})
    request = EvaluationRequest(
        folders,
        args.out,
        checkpoint=Path(args.model).expanduser() if args.model else None,
        arch=args.arch,
        img_size=args.img_size,
        frame=args.frame,
        trust_pickle=args.trust_pickle,
        embedding=None if args.no_embedding else "umap",
        heatmap_scale=not args.no_heatmap_scale,
        settings=dict(
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
        ),
    )
    out = evaluate_request(
        request,
        progress=lambda msg, _f: print(msg, flush=True) if msg.startswith("computing") else None,
    )
    run = read_run(out)
    print(format_report(run, "table"))
    if run.recommendation is not None:
        print("\n" + run.recommendation.sentence())
    for warning in run.warnings:
        print(f"warning: {warning}")
    print(f"\nrun written to {out}")
    return 0
