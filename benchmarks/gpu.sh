#!/usr/bin/env bash
# GPU measurements on a 1B-class model (llama3p2_1b shape, random weights, bf16):
#   - decode tokens/s at batch 1 and 64 and the fraction of nominal HBM bandwidth that implies;
#   - the SCoRe train step's model FLOPs utilisation (MFU) under a few memory settings.
#
#   bash benchmarks/gpu.sh [OUTDIR]     # each benchmark's stdout goes to OUTDIR/*.txt (last line JSON)
#
# A setting that does not fit the GPU's memory fails alone; the others still run.
set -uo pipefail
out="${1:-.}"
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"

python benchmarks/sampling.py --configs llama3p2_1b --dtype bfloat16 --batch 1,64 --prompt_len 128 \
  --new_tokens 512 --no_transformers --no_cache_steps 0 --no_episodes 2>&1 | tee "$out/sampling_1b.txt"

train() {  # name, extra flags
  local name="$1"
  shift
  python benchmarks/train_step.py --preset llama3p2_1b --dtype bfloat16 "$@" 2>&1 | tail -n 3 | tee "$out/train_$name.txt"
}
# Best found on an H100 80GB: batch 32 x 1024, cuDNN attention, dots_no_batch remat (45% MFU).
train b32_cudnn_dots --batch 32 --seq 1024 --logits_chunk_tokens 16384 --scan_layers --attention_impl cudnn \
  --remat_policy dots_no_batch
common=(--batch 16 --seq 1024 --logits_chunk_tokens 4096 --scan_layers)
train b16_cudnn_none "${common[@]}" --attention_impl cudnn
train b16_xla_dots "${common[@]}" --remat_policy dots_no_batch
