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
# The CPU benchmark's model (6 x 256, length 256, batch 32, vocabulary 8192).
run
# GPT-2-small-sized masked diffusion model (MDLM OWT shape), XLA and cuDNN attention.
run --width=768 --depth=12 --heads=12 --seq_len=1024 --batch_size=32 --vocab=50304 \
    --time_conditioning=none --scan_layers
run --width=768 --depth=12 --heads=12 --seq_len=1024 --batch_size=32 --vocab=50304 \
    --time_conditioning=none --scan_layers --attention_impl=cudnn
