#!/usr/bin/env bash
# On the GPU machine, after prepare.sh has finished (its checkpoints and bundles in $WORK): the
# issue-17 measurements in one pass, each printing its table; JSON lands in $OUT.
set -u
WORK=${WORK:-/tmp/pw}
OUT=${OUT:-/tmp/out}
PC="python3 benchmarks/peer_compare.py --work $WORK"
$PC --model qwen3-0.6b --budget-s ${BUDGET_06:-200}
$PC --model llama-3.1-8b --budget-s ${BUDGET_8B:-260} --skip hf_compile_b8
$PC --model llama-3.1-8b --quantize fp8 --budget-s 120 --skip hf_eager,hf_compile_b1,hf_compile_b8
[ -d $WORK/qwen3-30b-a3b-${MOE_LAYERS:-6}l ] && $PC --model qwen3-30b-a3b --layers ${MOE_LAYERS:-6} --budget-s 150 --skip hf_compile_b1,hf_compile_b8
for b in llama-3.1-8b llama-3.1-8b-fp8; do
  for io in 128 1000; do
    n=$([ $io = 128 ] && echo 1000 || echo 256)
    [ -f $WORK/$b/bundle-sm90/manifest.json ] && timeout 150 python3 -m llmc.cli bench $WORK/$b/bundle-sm90 --throughput \
      --num-prompts $n --input-len $io --output-len $io --max-concurrency 256 --verify none --output-json $OUT/tp_${b}_${io}.json
  done
done
python3 benchmarks/decode_floors.py
[ -f $WORK/qwen3-0.6b/bundle-sm90/manifest.json ] && python3 benchmarks/plan_profile.py $WORK/qwen3-0.6b/bundle-sm90
