#!/usr/bin/env bash
# SFT on GSM8K chats -> GRPO with the exact-answer verifier -> GSM8K accuracy before and after.
#   bash recipes/grpo_gsm8k.sh [key=value ...]      # training overrides go to both training stages
#   SMOKE=1 bash recipes/grpo_gsm8k.sh              # tiny model, a few steps: checks the plumbing
# Environment: OUT (runs/grpo-gsm8k), NPROC (2; 1 with SMOKE), RLHF (rlhf), EVAL_DATA (the bundled prompts).
set -euo pipefail
OUT=${OUT:-runs/grpo-gsm8k}
RLHF=${RLHF:-rlhf}
EVAL_DATA=${EVAL_DATA:-builtin:gsm8k_prompts.jsonl}
COMMON=() SFT=() GRPO=() EVAL=(limit=200)
if [ "${SMOKE:-0}" = 1 ]; then
  NPROC=${NPROC:-1}
  COMMON=(model=tiny log.progress=false train.save_every=0)
  SFT=(train.max_steps=2 data.limit=32 data.max_length=128 train.micro_batch_size=2 train.grad_accum=1 train.eval_every=0)
  GRPO=(train.max_steps=2 data.limit=8 data.max_length=256 grpo.prompts_per_step=2 grpo.num_generations=2
        grpo.max_new_tokens=8 train.micro_batch_size=4)
  EVAL=(limit=4 max_new_tokens=8)
fi
NPROC=${NPROC:-2}
$RLHF train sft conf=recipes/sft_example.yaml output_dir="$OUT/sft" "${COMMON[@]}" "${SFT[@]}" "$@" --nproc "$NPROC"
$RLHF eval gsm8k model="$OUT/sft" data="$EVAL_DATA" "${EVAL[@]}" out="$OUT/gsm8k_before.json"
$RLHF train grpo conf=recipes/grpo_gsm8k.yaml model.path="$OUT/sft" output_dir="$OUT/grpo" "${COMMON[@]}" \
  "${GRPO[@]}" "$@" --nproc "$NPROC"
$RLHF eval gsm8k model="$OUT/grpo" data="$EVAL_DATA" "${EVAL[@]}" out="$OUT/gsm8k_after.json"
echo "GRPO pipeline done: accuracy before $OUT/gsm8k_before.json, after $OUT/gsm8k_after.json"
