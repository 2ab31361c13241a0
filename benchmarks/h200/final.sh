#!/usr/bin/env bash
# On a fresh GPU machine, one call that measures everything issue 17 lists with the current code:
# prepare.sh in the background (0.6B, 8B, MoE by layers, FP8), the GPU kernel tests meanwhile, then
# per bundle as it appears: llmc decode b1 / b8 / one engine request, the plan profile, throughput
# (8B bf16 and FP8), transformers + torch.compile on the 0.6B, the kernel floors. Stages past
# DEADLINE_S seconds are skipped, so the call ends inside the device's limit.
set -u
WORK=${WORK:-/tmp/pw}; OUT=${OUT:-/tmp/out}; mkdir -p $WORK $OUT
T0=$(date +%s); DEADLINE=${DEADLINE_S:-540}
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
(setsid nohup bash benchmarks/h200/prepare.sh > $WORK/prepare.log 2>&1 &)
# prepare.sh makes its checkpoints on the GPU: no timing while one is being made (or while a
# measuring process holds the GPU's memory, which made the MoE checkpoint fail once)
timeout 90 python3 -m pytest -q -p no:cacheprovider -n 6 tests/gpu/test_kernels_gpu.py tests/gpu/test_moe_gpu.py \
  tests/gpu/test_fp8_kernels_gpu.py tests/gpu/test_logprobs_gpu.py 2>&1 | tail -3
checkpoints_done() { ! pgrep -f -- "--make-checkpoint" > /dev/null; }
ready() {
  for _ in $(seq 1 $2); do
    [ -f $WORK/$1/bundle-sm90/manifest.json ] && checkpoints_done && return 0
    [ $(left) -lt 30 ] && break; sleep 1
  done
  echo "$1: no bundle in time (or a checkpoint still being made)"; return 1
}
measure() {  # model dir, peer_compare args, extra stages to skip
  [ $(left) -gt 60 ] || { echo "$1: skipped (deadline)"; return; }
  python3 benchmarks/peer_compare.py --work $WORK --budget-s $(( $(left) - 20 )) $2 --skip "hf_eager,hf_compile_b8${3:-}" 2>&1 | sed -n '/ on NVIDIA/,$p'
  python3 benchmarks/plan_profile.py $WORK/$1/bundle-sm90 --plans decode_b1 2>&1 | sed -n '2,8p'
}
throughput() {
  for io in 128 1000; do
    n=$([ $io = 128 ] && echo 1000 || echo 256)
    [ $(left) -gt 50 ] && timeout $(( $(left) - 10 )) python3 -m llmc.cli bench $WORK/$1/bundle-sm90 --throughput --num-prompts $n \
      --input-len $io --output-len $io --max-concurrency 256 --verify none --output-json $OUT/tp_$1_$io.json 2>&1 | head -1
  done
}
ready qwen3-0.6b 200 && measure qwen3-0.6b "--model qwen3-0.6b"
ready llama-3.1-8b 200 && measure llama-3.1-8b "--model llama-3.1-8b" ",hf_compile_b1" && throughput llama-3.1-8b
[ $(left) -gt 60 ] && python3 benchmarks/decode_floors.py 2>&1 | tail -3
ready qwen3-30b-a3b-6l 150 && measure qwen3-30b-a3b-6l "--model qwen3-30b-a3b --layers 6" ",hf_compile_b1"
ready llama-3.1-8b-fp8 200 && measure llama-3.1-8b-fp8 "--model llama-3.1-8b --quantize fp8" ",hf_compile_b1" && throughput llama-3.1-8b-fp8
grep "^\[" $WORK/prepare.log | grep -v "\.\.\.$"; echo "wall $(( $(date +%s) - T0 )) s"
