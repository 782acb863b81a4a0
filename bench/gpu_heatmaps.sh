#!/usr/bin/env bash
# One prepared script for a lent GPU machine: the heatmap path on CUDA, and the engine's
# CPU test suite (minus the Streamlit dashboard) under that machine's own torch/torchvision.
#   1. pytest of the engine (heatmaps, envelope, extraction, CLI …) — torch 2.11 compatibility;
#   2. bench/heatmaps.py latency on CUDA, ResNet-18 at 224 px.
# Wheels the GPU image lacks travel in .whl/ (zennit, pytorch-ood, umap-learn, pynndescent).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, zennit; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider -x -n 8 tests \
  --ignore=tests/test_dashboard.py --ignore=tests/test_dashboard_browser.py \
  --ignore=tests/test_cli_dashboard.py --ignore=tests/test_dashboard_helpers.py \
  2>&1 | tail -25 | tee "$OUT/pytest_engine.log"
python3 bench/heatmaps.py --device cuda --run /none --repeats 20 2>&1 | tee "$OUT/heatmaps_cuda.log"
