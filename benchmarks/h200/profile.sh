#!/usr/bin/env bash
# On the GPU machine, call 1 of a tuning session: start prepare.sh in the background, then what needs
# no bundle (the per-node floor of a graph, the gemv / decode-attention launch sweeps), then the
# Qwen3-0.6B plan profile as soon as its bundle exists.
set -u
WORK=${WORK:-/tmp/pw}; OUT=${OUT:-/tmp/out}; mkdir -p $WORK $OUT
(setsid nohup bash benchmarks/h200/prepare.sh > $WORK/prepare.log 2>&1 &)
python3 benchmarks/h200/launch_floor.py | tee $OUT/launch_floor.txt
timeout ${SWEEP_S:-240} python3 benchmarks/kernels_bench.py --models ${SWEEP_MODELS:-qwen3-0.6b} --sweep --no-default | tee $OUT/sweep.txt
for _ in $(seq 1 ${WAIT_S:-200}); do [ -f $WORK/qwen3-0.6b/bundle-sm90/manifest.json ] && break; sleep 1; done
B=$WORK/qwen3-0.6b/bundle-sm90
[ -f $B/manifest.json ] && python3 benchmarks/plan_profile.py $B --plans decode_b1,decode_b8,decode_b64 | tee $OUT/profile_06.txt
cat $WORK/prepare.log
