#!/usr/bin/env bash
# On the GPU machine: the whole test suite in one pytest invocation (interpreter kernel tests and
# GPU tests together), then every family's CPU-built bundle through `llmc verify --run --device cuda`.
set -u
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
t0=$(date +%s)
timeout ${SUITE_S:-420} python3 -m pytest -q -p no:cacheprovider -n ${WORKERS:-8} --dist loadfile 2>&1 | tee $OUT/pytest.log | tail -40
echo "suite wall: $(( $(date +%s) - t0 )) s"
B=${BUNDLES:-.bundles}; [ -d "$B" ] && python3 benchmarks/h200/family_bundles.py verify --out "$B" 2>&1 | tee $OUT/families.log
