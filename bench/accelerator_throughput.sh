#!/usr/bin/env bash
# Training throughput and MFU on one accelerator, bfloat16 compute, against the chip's rated
# dense bf16 peak (PEAK_FLOPS, default 989e12: an H100 SXM). One JSON line per model size.
#   PEAK_FLOPS=989e12 bench/accelerator_throughput.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PEAK=${PEAK_FLOPS:-989e12}
run() {
  python3 bench/train_throughput.py --dtype=bfloat16 --peak_flops="$PEAK" --steps=10 "$@" \
    2>/tmp/dlm_bench_err || { echo "{\"bench\": \"train_throughput\", \"failed\": \"$*\"}";
                             tail -n 5 /tmp/dlm_bench_err >&2; }
}
# Every run uses the automatic settings (attention_impl=auto: cuDNN where it runs; micro-batches
# from the compiled step's memory estimate) unless a flag says otherwise.
# The CPU benchmark's model (6 x 256, length 256, batch 32, vocabulary 8192).
run
# 125M: GPT-2-small-sized masked diffusion model (MDLM OWT shape), automatic, then XLA attention.
run --width=768 --depth=12 --heads=12 --seq_len=1024 --batch_size=32 --vocab=50304 \
    --time_conditioning=none --scan_layers
run --width=768 --depth=12 --heads=12 --seq_len=1024 --batch_size=32 --vocab=50304 \
    --time_conditioning=none --scan_layers --attention_impl=xla
# 1B: 16 x 2048 (heads of 128), length 1024, batch 32.
run --width=2048 --depth=16 --heads=16 --seq_len=1024 --batch_size=32 --vocab=50304 \
    --time_conditioning=none --scan_layers --compile_both=false
# Sampling a LLaDA-8B-shaped random model (32 x 4096, vocabulary 126,464) in bfloat16: no cache,
# prefix and dual caches (bench/decode_speed.py; its random checkpoint is written and removed).
python3 bench/decode_speed.py --parts=llada --llada_layers=32 --llada_width=4096 \
    --llada_dtype=bfloat16 --thresholds= 2>/tmp/dlm_bench_err || tail -n 5 /tmp/dlm_bench_err >&2
