#!/usr/bin/env bash
# On the GPU machine, in the background of the test run: random-weight checkpoints of real shapes
# and their llmc bundles, through peer_compare.py's own stages (checkpoint, build), so that the
# measuring call finds them in $WORK. Every checkpoint first (they are made on the GPU, so nothing
# is timed meanwhile, and a measuring process holding the GPU's memory cannot starve them), then
# the builds (CPU only). FP8 reuses the bf16 checkpoint and builds last (the slowest build).
set -u
WORK=${WORK:-/tmp/pw}
PC="python3 benchmarks/peer_compare.py --work $WORK --budget-s 1000"
MEASURING=llmc_b1,llmc_b8,llmc_engine_b1,hf_eager,hf_compile_b1,hf_compile_b8
MOE="--model qwen3-30b-a3b --layers ${MOE_LAYERS:-6}"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; df -h "$WORK" | tail -1; }
mkdir -p $WORK/llama-3.1-8b-fp8
free_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
[ "$free_gb" -gt 60 ] || { echo "qwen3-30b-a3b skipped: ${free_gb} GB free"; MOE=""; }
for m in "--model qwen3-0.6b" "--model llama-3.1-8b" ${MOE:+"$MOE"}; do
  $PC $m --skip build,$MEASURING; stamp "checkpoint $m"
done
ln -sfn $WORK/llama-3.1-8b/hf $WORK/llama-3.1-8b-fp8/hf
for m in "--model qwen3-0.6b" "--model llama-3.1-8b" ${MOE:+"$MOE"} "--model llama-3.1-8b --quantize fp8"; do
  $PC $m --skip $MEASURING; stamp "build $m"
done
