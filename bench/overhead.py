"""Overhead of NERO over a plain forward pass, and speed-up over a release-style loop.

    python bench/overhead.py [--n 256] [--img-size 224] [--arch resnet18]

Prints, measured in this one run on this machine:
  (a) (forward + feature capture + relevance + NERO scoring) / (plain forward pass)  — target ≤ 1.05
  (b) the speed-up of our batched relevance + scoring over a per-sample loop like the
      release's (one forward per image, a new hook each time, relevance class by class).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nero.data.preprocess import DEFAULT_IMG_SIZE
from nero.detect.detector import NERO
from nero.detect.relevance import head_relevance
from nero.model.classifier import build_model, capture_head_input, find_head, head_arrays


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--img-size", type=int, default=DEFAULT_IMG_SIZE)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--loop-samples", type=int, default=64, help="samples timed in the loop")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = build_model(args.arch, 3, args.img_size).eval().to(dev)
    _, head = find_head(model, args.img_size)
    head_np = head_arrays(head)
    x = torch.randn(args.n, 3, args.img_size, args.img_size, device=dev)
    batches = x.split(args.batch_size)

    # fit a detector on random features so scoring does its real work
    rng = np.random.default_rng(0)
    train_f = np.maximum(rng.normal(size=(600, head.in_features)), 0)
    detector = NERO.from_preset("reference").fit(
        train_f, head_relevance(train_f, head_np), rng.integers(0, 3, 600)
    )

    def plain() -> None:
        with torch.inference_mode():
            for b in batches:
                model(b)
        sync()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def nero_pass() -> None:
        feats = []
        with capture_head_input(head) as store, torch.inference_mode():
            for b in batches:
                model(b)
                feats.append(store["features"].flatten(1).float().cpu().numpy())
        f = np.concatenate(feats)
        detector.score(f, head_relevance(f, head_np))

    def release_loop() -> None:
        w = head.weight.detach().double().cpu()
        bias = head.bias.detach().double().cpu()
        for i in range(args.loop_samples):
            store = {}
            hook = lambda m, a, s=store: s.__setitem__("a", a[0])  # noqa: E731
            head.register_forward_pre_hook(hook)  # never removed, as in the release
            with torch.no_grad():
                y = model(x[i : i + 1]).double()[0]
            a = store["a"].double().cpu()[0]
            y = y.cpu()
            p_ = torch.softmax(y, 0)
            r = torch.zeros(a.numel() + 1, dtype=torch.float64)
            for k in range(y.numel()):  # class by class, as the release does
                r[:-1] += p_[k] * a * w[k] / y[k]
                r[-1] += p_[k] * bias[k] / y[k]
            detector.score(a.numpy()[None], r.numpy()[None])
        head._forward_pre_hooks.clear()  # the release never removes its hooks

    t_plain = timed(plain)
    t_nero = timed(nero_pass)
    t_loop = timed(release_loop, repeats=1) * args.n / args.loop_samples
    print(
        f"{args.arch} @ {args.img_size}px, {args.n} images, batch {args.batch_size}, "
        f"{args.device}, {torch.get_num_threads()} threads"
    )
    print(f"plain forward pass          {t_plain:8.3f} s")
    print(f"forward + relevance + NERO  {t_nero:8.3f} s")
    print(f"(a) overhead ratio          {t_nero / t_plain:8.3f}   (target ≤ 1.05)")
    print(f"release-style loop (est.)   {t_loop:8.3f} s  (timed on {args.loop_samples} samples)")
    print(f"(b) speed-up over the loop  {t_loop / t_nero:8.1f}×")


if __name__ == "__main__":
    main()
