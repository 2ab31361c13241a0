#!/usr/bin/env bash
# On the GPU machine, in the background of the test run: random-weight checkpoints of real shapes
# and their llmc bundles, through peer_compare.py's own stages (checkpoint, build), so that the
# measuring call finds them in $WORK. FP8 reuses the bf16 checkpoint and comes last (its build is
# the slowest, over 4 minutes). Disk is checked before MoE.
set -u
WORK=${WORK:-/tmp/pw}
PC="python3 benchmarks/peer_compare.py --work $WORK --budget-s 1000"
ONLY_BUILD=llmc_b1,llmc_b8,hf_eager,hf_compile_b1,hf_compile_b8
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; df -h "$WORK" | tail -1; }
mkdir -p $WORK/llama-3.1-8b-fp8
$PC --model qwen3-0.6b --skip $ONLY_BUILD; stamp qwen3-0.6b
$PC --model llama-3.1-8b --skip $ONLY_BUILD; stamp llama-3.1-8b
free_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
if [ "$free_gb" -gt 24 ]; then
  $PC --model qwen3-30b-a3b --layers ${MOE_LAYERS:-6} --skip $ONLY_BUILD; stamp qwen3-30b-a3b
else
  echo "qwen3-30b-a3b skipped: ${free_gb} GB free"
fi
ln -sfn $WORK/llama-3.1-8b/hf $WORK/llama-3.1-8b-fp8/hf
$PC --model llama-3.1-8b --quantize fp8 --skip $ONLY_BUILD; stamp llama-3.1-8b-fp8
