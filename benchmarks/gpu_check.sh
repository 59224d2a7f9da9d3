#!/usr/bin/env bash
# One prepared run for a lent H100/H200 (the device tool): checks the CUDA paths of training and reports
# numbers. bf16 training of llama-1b (TinyLlama-shaped, 1.1B) under torchrun with FSDP2 (one rank),
# torch.compile per block, selective activation checkpointing and flash SDPA; prints tokens/s and MFU.
#
#   bash benchmarks/gpu_check.sh            (results and logs in $OUT, else /tmp/gpu_check)
#
# Needs only what the device image has (python3 with torch, sentencepiece, safetensors, numpy, tqdm,
# matplotlib): the project runs from src/ without installing. The corpus is the Python standard library's
# source, as plain-text documents; the tokenizer is trained on it (32000 pieces).
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
WORK=$(mktemp -d)
STEPS=${STEPS:-40}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
lf() { python3 -m llamafoundry.cli "$@"; }

python3 - <<'PY' | tee "$OUT/device.txt"
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
print("torch", torch.__version__, "| device", torch.cuda.get_device_name(), "| bf16", torch.cuda.is_bf16_supported())
q = torch.randn(4, 16, 2048, 128, device="cuda", dtype=torch.bfloat16)
with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if the flash kernel cannot run
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
print("flash SDPA: ok")
PY

STDLIB=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
find "$STDLIB" -name '*.py' -not -path '*site-packages*' -size +2k | sort | head -3000 > "$WORK/files.txt"
lf tokenizer train $(cat "$WORK/files.txt") --output "$WORK/tokenizer.model" --vocab-size 32000 \
  --input-sentence-size 1000000
lf data tokenize $(sed 's/^/github=/' "$WORK/files.txt") --tokenizer "$WORK/tokenizer.model" \
  --output "$WORK/tokens" --val-fraction 0.01

torchrun --standalone --nproc-per-node 1 -m llamafoundry.cli train \
  --model.preset llama-1b --data.tokens "$WORK/tokens" --data.seq_len 2048 \
  --train.batch_tokens 131072 --train.micro_batch 8 --train.steps "$STEPS" --train.precision bf16 \
  --train.lr 3e-4 --parallel.compile true --parallel.activation_checkpoint selective \
  --parallel.sdpa_backend flash --eval.every 0 --eval.batches 2 --checkpoint.every 0 \
  --output.dir "$WORK/run" --output.tensorboard false 2>&1 | tee "$OUT/train.log"

cp "$WORK/run/metrics.jsonl" "$WORK/run/report.md" "$WORK/run/loss_curve.png" "$OUT/"
python3 - "$WORK/run/metrics.jsonl" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
train = [r for r in rows if r["kind"] == "train"]
steady = train[len(train) // 4:]  # after compilation and warm-up
print(f"llama-1b bf16, FSDP2 + compile + selective AC, {len(train)} steps")
print(f"tokens/s: {statistics.median(r['tokens_per_s'] for r in steady):,.0f} (median of steps "
      f"{steady[0]['step']}-{steady[-1]['step']})")
print(f"MFU: {statistics.median(r['mfu'] for r in steady):.1%} of the datasheet bf16 peak")
print(f"loss: {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f}")
PY
