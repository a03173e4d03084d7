#!/usr/bin/env bash
# SFT -> reward model and SFT -> DPO, chained through model.path (each stage reads the previous final/).
#   bash recipes/dpo.sh [key=value ...]          # overrides go to every training stage
#   SMOKE=1 bash recipes/dpo.sh                  # tiny model, a few steps: checks the plumbing
# Environment: OUT (runs), NPROC (2; 1 with SMOKE), RLHF (rlhf).
set -euo pipefail
OUT=${OUT:-runs}
RLHF=${RLHF:-rlhf}
COMMON=() STEPS=() EVAL=()
if [ "${SMOKE:-0}" = 1 ]; then
  NPROC=${NPROC:-1}
  COMMON=(model=tiny log.progress=false train.save_every=0 data.max_length=128)
  STEPS=(train.max_steps=2 data.limit=16 train.micro_batch_size=2 train.grad_accum=1 train.eval_every=0)
  EVAL=(limit=8)
fi
NPROC=${NPROC:-2}
$RLHF train sft conf=recipes/sft_example.yaml output_dir="$OUT/sft" "${COMMON[@]}" "${STEPS[@]}" "$@" --nproc "$NPROC"
$RLHF train rm conf=recipes/rm_hh.yaml model.path="$OUT/sft" output_dir="$OUT/rm" "${COMMON[@]}" "${STEPS[@]}" "$@" \
  --nproc "$NPROC"
$RLHF eval rm-accuracy model="$OUT/rm" data=builtin:hh_harmless_sample.jsonl "${EVAL[@]}"
$RLHF train dpo conf=recipes/dpo_hh.yaml model.path="$OUT/sft" output_dir="$OUT/dpo" "${COMMON[@]}" "${STEPS[@]}" "$@" \
  --nproc "$NPROC"
echo "DPO pipeline done: $OUT/{sft,rm,dpo}"
