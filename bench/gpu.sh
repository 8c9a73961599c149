#!/usr/bin/env bash
# The GPU build benchmark as one device call: install carried wheels (.whl/, for `datasets`), report the card,
# run `python -m bench --only gpu`, and leave the log and results.json in $OUT (or bench/out without one).
# Usage: bench/gpu.sh [IMAGES]   (default 30000; run from the repository root)
set -uo pipefail
images="${1:-30000}"
out="${OUT:-bench/out}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$out/gpu-device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    2>&1 | tee -a "$out/gpu-device.txt"
python3 -c "import torchvision; print('torchvision', torchvision.__version__)" 2>&1 | tee -a "$out/gpu-device.txt"
python3 -m bench --only gpu --gpu-images "$images" --out /tmp/clipbot-bench 2>&1 | tee "$out/gpu-bench.log"
status=${PIPESTATUS[0]}
cp /tmp/clipbot-bench/results.json "$out/gpu-results.json" 2>/dev/null || true
exit "$status"
