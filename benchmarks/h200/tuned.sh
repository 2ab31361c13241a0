#!/usr/bin/env bash
# On a fresh GPU machine, after a change to launch rules: prepare.sh in the background, the GPU
# tests of the kernels whose rules changed, then llmc alone (no peers: measure.sh has them) on each
# bundle as it appears: decode b1 / b8, the plan profile, the kernel floors.
set -u
WORK=${WORK:-/tmp/pw}; OUT=${OUT:-/tmp/out}; mkdir -p $WORK $OUT
(setsid nohup bash benchmarks/h200/prepare.sh > $WORK/prepare.log 2>&1 &)
[ -n "${SWEEP:-}" ] && timeout ${SWEEP_S:-300} python3 benchmarks/h200/sweep_decode.py 2>&1 | grep -v Error
timeout ${TESTS_S:-150} python3 -m pytest -q -p no:cacheprovider -n 6 tests/gpu -k "${TESTS_K:-(linear or gemv or fp8 or moe or rotary or rope) and not bundle}" 2>&1 | tail -4
wait_for() { for _ in $(seq 1 $2); do [ -f $1/manifest.json ] && return 0; sleep 1; done; echo "no bundle in $1"; return 1; }
LLMC_ONLY="--skip hf_eager,hf_compile_b1,hf_compile_b8"
for m in ${MODELS:-qwen3-0.6b llama-3.1-8b}; do
  wait_for $WORK/$m/bundle-sm90 ${WAIT_S:-240} || continue
  python3 benchmarks/peer_compare.py --model $m --work $WORK --budget-s 90 $LLMC_ONLY 2>&1 | sed -n '/floor/,/^llmc /p'
  python3 benchmarks/plan_profile.py $WORK/$m/bundle-sm90 --plans decode_b1 2>&1 | tail -12
done
python3 benchmarks/decode_floors.py 2>&1 | tail -8
tail -3 $WORK/prepare.log
