"""``nero heatmap``: an input-space LRP heatmap of one run sample, as PNG and in words."""

from __future__ import annotations

import argparse
from pathlib import Path

from nero.explain.kinds import KINDS, kinds_help


def add(sub: argparse._SubParsersAction) -> None:
    hm = sub.add_parser("heatmap", help="write an input-space LRP heatmap of one sample as PNG")
    hm.add_argument("--run", type=Path, required=True)
    hm.add_argument("--sample", type=int, required=True, help="row index in samples.csv")
    hm.add_argument("--kind", choices=KINDS, default=KINDS[0], help=kinds_help() + " (--target)")
    hm.add_argument(
        "--target",
        type=int,
        help="class index (class: default predicted; ood/distance: default nearest centroid), "
        "or the neuron (neuron)",
    )
    hm.add_argument("--out", type=Path, required=True)
    hm.set_defaults(handler=heatmap)


def heatmap(args: argparse.Namespace) -> int:
    import numpy as np

    from nero.explain.drawing import overlay_png
    from nero.explain.field_of_view import frame_share
    from nero.run.directory import read_run
    from nero.run.heatmap_scale import display_scale
    from nero.run.heatmaps import heatmaps_of, sample_image

    run = read_run(args.run)
    service = heatmaps_of(run)
    (heat,) = service.sample(args.sample, [(args.kind, args.target)])
    (view,) = service.views([heat], compute_scale=True)  # calibrated once, then stored
    shown, factor = display_scale(heat.relevance, view.scale)
    image = sample_image(run, args.sample)
    overlay_png(
        image, heat, out=args.out, class_names=run.class_names, scale=shown, unusual=view.unusual
    )
    frame = frame_share(view.relevance, np.asarray(image))
    first, *rest = view.summary(frame, factor, of=f"sample {args.sample}")
    print(f"{args.out}: {first}")
    for line in rest:
        print(line)
    return 0
