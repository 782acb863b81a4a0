#!/usr/bin/env bash
# One prepared script for a lent GPU machine (see README "GPU"): the CUDA path of the engine.
#   1. reproduce_paper.py on a generated Kvasir stand-in: prepare → train (AMP) → evaluate all
#      methods (ODIN/GradNorm included) on CUDA;  2. overhead.py on CUDA at 224 px.
# Wheels for packages the GPU image lacks travel in .whl/ (pytorch-ood).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
python3 bench/reproduce_paper.py --work /tmp/rp --standin-per-class "${PER_CLASS:-500}" \
  --epochs "${EPOCHS:-20}" --device cuda --workers 12 2>&1 | grep -v "it/s]" | tee "$OUT/reproduce.log"
python3 bench/overhead.py --device cuda --n 1024 --batch-size 64 --loop-samples 64 2>&1 | tee "$OUT/overhead_cuda.log"
