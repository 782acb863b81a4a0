"""Wall time and peak memory of `nero evaluate` and `nero score` as the data grow, per engine.

    python bench/scale.py [--sizes 10000,50000,100000] [--engines local,ray]
                          [--root /tmp/nero-scale] [--odin-n 1024]

For each N it generates N small images once (a prepared folder: 40 % id_train in three
colour classes, 30 % id_test, 30 % OOD), then runs, as separate processes on a random
ResNet-18 at 32 px:

* ``nero evaluate --methods <every method but ODIN> --no-embedding`` per engine,
* the relevance map (UMAP fitted on a sample and extended) on the local engine's run,
* ``nero score`` of all N images against that run, per engine;

and prints one table (N, step, engine, wall, img/s, peak RSS of the nero process, peak RSS
of its whole process tree — for Ray that includes the raylet and the actors, summed, so
shared pages count once per process), the ratios 100k/10k of peak RSS, Ray/local wall, and
ODIN's cost relative to a plain forward pass on ``--odin-n`` images. Written to
``bench/results/scale.md`` as well.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import results_io
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "scale.md"
IMG_SIDE = 40  # stored images; the model sees them at 32 px
COLOURS = {"red": (190, 70, 60), "pink": (220, 140, 140), "brown": (120, 80, 40)}


def generate(root: Path, n: int, seed: int = 0) -> Path:
    """A prepared folder of ``n`` small PNGs (made once; a marker file says it is complete)."""
    data = root / f"data-{n}"
    if (data / ".complete").is_file():
        return data
    rng = np.random.default_rng(seed)
    n_train, n_test = int(0.4 * n), int(0.3 * n)
    plan = [("id_train", n_train), ("id_test", n_test), ("ood", n - n_train - n_test)]
    for split, count in plan:
        names = list(COLOURS) if split != "ood" else ["noise", "dark"]
        for k, name in enumerate(names):
            folder = data / split / name
            folder.mkdir(parents=True, exist_ok=True)
            share = count // len(names) + (1 if k < count % len(names) else 0)
            for i in range(share):
                if name == "noise":
                    arr = rng.integers(0, 255, (IMG_SIDE, IMG_SIDE, 3), dtype=np.uint8)
                else:
                    mean = COLOURS.get(name, (30, 20, 20))
                    arr = rng.normal(mean, 30, (IMG_SIDE, IMG_SIDE, 3)).clip(0, 255)
                Image.fromarray(arr.astype(np.uint8)).save(folder / f"{i:06d}.png")
    (data / ".complete").write_text(str(n))
    return data


def tree_rss(root_pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(entry), int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measured(argv: list[str]) -> tuple[float, int, int]:
    """(wall s, peak RSS of the process, peak RSS of its process tree) of one command."""
    # stderr to a file, not a pipe: a progress bar over 100k images would fill a pipe nobody
    # reads until the end, and the command would wait on it for ever.
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, text=True)
        peak_tree = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not done.is_set():
                peak_tree = max(peak_tree, tree_rss(proc.pid))
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            sys.exit(f"{' '.join(argv)} failed:\n{log.read()[-3000:]}")
    return wall, usage.ru_maxrss * 1024, max(peak_tree, usage.ru_maxrss * 1024)


def odin_cost(data: Path, n: int, img_size: int) -> tuple[float, float]:
    """(plain forward s, ODIN s) on the first ``n`` test images, same loader, same model."""
    import torch

    from nero.data.folders import list_images, make_loader
    from nero.data.preprocess import Preprocessing
    from nero.detect.registry import create_method
    from nero.model.classifier import load_classifier

    torch.manual_seed(0)
    model = load_classifier("resnet18", None, len(COLOURS), img_size)
    paths = list_images(data / "id_test")[:n]

    def plain() -> None:
        with torch.inference_mode():
            for images, *_ in make_loader(paths, Preprocessing(img_size, "none"), 32):
                model.model(images)

    def odin() -> None:
        loader = make_loader(paths, Preprocessing(img_size, "none"), 32)
        create_method("odin").score_inputs(model.model, model.head, loader)

    times = []
    for fn in (plain, odin):
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10000,50000,100000")
    p.add_argument("--engines", default="local,ray")
    p.add_argument("--root", type=Path, default=Path("/tmp/nero-scale"))
    p.add_argument("--odin-n", type=int, default=256)
    p.add_argument("--odin-img-size", type=int, default=224, help="ODIN's cost at this size")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    from nero.detect.registry import feature_level_methods

    methods = ",".join(feature_level_methods())
    nero = [sys.executable, "-m", "nero.cli"]
    rows = []
    peaks: dict[tuple[str, str], dict[int, int]] = {}
    walls: dict[tuple[str, int, str], float] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        data = generate(args.root, n)
        for engine in args.engines.split(","):
            run = args.root / f"run-{n}-{engine}"
            common = ["--arch", "resnet18", "--img-size", "32", "--engine", engine]
            steps = {
                "evaluate": [
                    *nero,
                    "evaluate",
                    "--data",
                    str(data),
                    "--methods",
                    methods,
                    "--no-embedding",
                    "--no-heatmap-scale",
                    "--overwrite",
                    "--out",
                    str(run),
                    *common,
                ],
                "score": [
                    *nero,
                    "score",
                    "--run",
                    str(run),
                    str(data),
                    "--engine",
                    engine,
                    "--out",
                    str(args.root / f"score-{n}-{engine}.csv"),
                ],
            }
            if engine == "local":
                steps["umap map"] = [
                    sys.executable,
                    "-c",
                    "import sys; from nero.run.embedding import compute_embedding; "
                    "compute_embedding(sys.argv[1])",
                    str(run),
                ]
            for step, argv in steps.items():
                (args.root / f"score-{n}-{engine}.csv").unlink(missing_ok=True)
                wall, rss, tree = measured(argv)
                peaks.setdefault((step, engine), {})[n] = rss
                walls[(step, n, engine)] = wall
                rows.append((n, step, engine, wall, n / wall, rss / 2**30, tree / 2**30))
                print(
                    f"{n:>7} {step:9s} {engine:5s} {wall:7.1f} s {n / wall:7.0f} img/s "
                    f"{rss / 2**30:5.2f} GiB {tree / 2**30:5.2f} GiB",
                    flush=True,
                )
    lines = [
        "| N | step | engine | wall (s) | img/s | peak RSS, nero process (GiB) "
        "| peak RSS, process tree (GiB) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {n} | {s} | {e} | {w:.1f} | {r:.0f} | {m:.2f} | {t:.2f} |"
            for n, s, e, w, r, m, t in rows
        ),
        "",
    ]
    sizes = sorted({n for n, *_ in rows})
    for (step, engine), by_n in peaks.items():
        if len(sizes) > 1:
            lines.append(
                f"- peak RSS {sizes[-1]} / {sizes[0]}, {step} ({engine}): "
                f"{by_n[sizes[-1]] / by_n[sizes[0]]:.2f}×"
            )
    for (step, n, engine), wall in walls.items():
        if engine == "ray" and (step, n, "local") in walls:
            lines.append(
                f"- wall Ray / local, {step}, N={n}: {wall / walls[(step, n, 'local')]:.2f}×"
            )
    plain, odin = odin_cost(generate(args.root, sizes[0]), args.odin_n, args.odin_img_size)
    lines.append(
        f"- ODIN / plain forward pass on {args.odin_n} images at {args.odin_img_size} px "
        "(same loader, ResNet-18; a forward, an input-gradient backward, a forward per batch): "
        f"{odin:.1f} s / {plain:.1f} s = {odin / plain:.2f}×"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        command = f"python bench/scale.py --sizes {args.sizes} --engines {args.engines}"
        results_io.write_result(
            RESULTS,
            f"# bench/scale.py\n\n<!-- scale-table -->\nMeasured by `{command}` on "
            f"{os.cpu_count()} CPUs, a random ResNet-18 at 32 px.\n\n{text}<!-- /scale-table -->",
        )


if __name__ == "__main__":
    main()
