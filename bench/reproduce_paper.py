"""Reproduce the paper's table: prepare → train → evaluate (all methods) → compare (spec §6).

For a user with Kvasir-v2 or GastroVision on disk (and ideally a GPU):

    python bench/reproduce_paper.py --dataset kvasir --root ~/data/kvasir-dataset-v2 \\
        --work runs/paper-kvasir [--init-weights resnet18-imagenet.pth] [--epochs 20]

Without ``--root`` it builds a generated stand-in with Kvasir's folder names (synthetic
endoscopy scenes: the numbers then only prove the pipeline, not the paper).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from nero.data.prepare import KVASIR_CLASSES, prepare
from nero.data.preprocess import DEFAULT_IMG_SIZE
from nero.detect.registry import available_methods
from nero.model.train import TrainConfig, train_classifier
from nero.run.directory import read_run
from nero.run.pipeline import Folders, evaluate_folders

TRAIN_FLAGS = ("arch", "epochs", "img_size", "device", "workers")  # → TrainConfig
# Spec §6, ResNet-18 columns (AUROC, FPR95).
PUBLISHED = {
    "kvasir": {
        "msp": (90.30, 41.72),
        "odin": (91.77, 35.44),
        "energy": (88.85, 52.36),
        "entropy": (90.38, 41.86),
        "maxlogit": (88.90, 52.38),
        "mahalanobis": (84.05, 54.06),
        "vim": (90.62, 41.10),
        "neco": (89.64, 47.90),
        "react_release": (86.57, 53.78),
        "gradnorm": (85.33, 54.68),
        "nero": (90.76, 28.84),
    },
    "gastrovision": {
        "msp": (66.93, 90.56),
        "odin": (69.79, 79.27),
        "energy": (70.31, 79.79),
        "entropy": (67.37, 87.32),
        "maxlogit": (70.08, 80.44),
        "mahalanobis": (65.93, 89.69),
        "vim": (72.70, 76.98),
        "neco": (79.81, 71.61),
        "react_release": (61.93, 83.86),
        "gradnorm": (62.55, 90.50),
        "nero": (75.95, 74.33),
    },
}
# Stand-in: which synthetic scene (and artefact) plays each Kvasir class.
STANDIN = {
    "normal-cecum": ("cecum", None),
    "normal-pylorus": ("pylorus", None),
    "normal-z-line": ("z-line", None),
    "polyps": ("cecum", "polyp"),
    "dyed-lifted-polyps": ("cecum", "blue-dye"),
    "dyed-resection-margins": ("pylorus", "blue-dye"),
    "esophagitis": ("z-line", "bleeding"),
    "ulcerative-colitis": ("cecum", "bleeding"),
}


def _standin_image(job: tuple[str, int, int, int, Path]) -> None:
    from nero.data.demo_data import insert_artefact, render_scene

    cls, i, size, seed, path = job
    rng = np.random.default_rng([seed, KVASIR_CLASSES.index(cls), i])
    scene, artefact = STANDIN[cls]
    img = render_scene(scene, rng, size)
    if artefact:
        img, _ = insert_artefact(img, artefact, rng, 1.0)
    Image.fromarray(img).save(path, quality=92)


def make_standin(root: Path, per_class: int, size: int, seed: int = 0) -> Path:
    jobs = []
    for cls in KVASIR_CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        jobs += [(cls, i, size, seed, root / cls / f"{i:05d}.jpg") for i in range(per_class)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_standin_image, jobs, chunksize=32))
    return root


def paper_table(report: dict, dataset: str, ood_set: str = "all") -> str:
    rows = report["results"][ood_set]
    lines = [f"| method | ours AUROC / FPR95 | paper ResNet-18 {dataset} |", "|---|---|---|"]
    for method, m in sorted(rows.items(), key=lambda kv: -kv[1]["auroc"]):
        paper = PUBLISHED.get(dataset, {}).get(method)
        ref = f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "—"
        lines.append(f"| {method} | {m['auroc']:.2f} / {m['fpr95']:.2f} | {ref} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=["kvasir", "gastrovision"], default="kvasir")
    p.add_argument("--root", type=Path, help="the data set; omit for a generated stand-in")
    p.add_argument("--work", type=Path, default=Path("runs/paper"))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--img-size", type=int, default=DEFAULT_IMG_SIZE)
    p.add_argument("--init-weights", type=Path)
    p.add_argument("--device", default=None)
    p.add_argument("--standin-per-class", type=int, default=500)
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    root = args.root
    if root is None:
        if args.dataset != "kvasir":
            raise SystemExit("the generated stand-in exists for kvasir only; give --root")
        root = make_standin(args.work / "standin", args.standin_per_class, args.img_size)
        timings["generate stand-in"] = time.perf_counter() - t0
    prepared = args.work / "prepared"
    if not (prepared / "manifest.json").is_file():
        t = time.perf_counter()
        prepare(args.dataset, root, prepared)
        timings["prepare"] = time.perf_counter() - t
    ckpt = args.work / f"{args.arch}.pt"
    t = time.perf_counter()
    info = train_classifier(
        prepared,
        ckpt,
        TrainConfig(**{k: getattr(args, k) for k in TRAIN_FLAGS}),
        init_weights=args.init_weights,
    )
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    out = evaluate_folders(
        Folders(prepared),
        args.work / "run",
        checkpoint=ckpt,
        arch=args.arch,
        img_size=args.img_size,
        embedding=None,
        device=args.device,
        methods=available_methods(),
        preset="reference",
        overwrite=True,
    )
    timings["evaluate (all methods)"] = time.perf_counter() - t
    run = read_run(out)
    print(
        f"\nvalidation accuracy {info['val_accuracy']:.2f} % (best epoch {info['best_epoch']}), "
        f"ID test accuracy {run.report['id_accuracy']:.2f} %"
    )
    print(paper_table(run.report, args.dataset))
    print("\ntimings (s): " + json.dumps({k: round(v, 1) for k, v in timings.items()}))


if __name__ == "__main__":
    main()
