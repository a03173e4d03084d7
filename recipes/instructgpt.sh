#!/usr/bin/env bash
# The InstructGPT pipeline (Ouyang et al. 2022): sft -> rm -> ppo, chained through each stage's final/.
#   bash recipes/instructgpt.sh [key=value ...]        # overrides are passed to every stage
#   SMOKE=1 bash recipes/instructgpt.sh                # tiny random model, a few steps each: CPU, minutes
# Environment: OUT (runs/instructgpt), NPROC (2; 1 with SMOKE), RLHF (the rlhf command).
set -euo pipefail
OUT=${OUT:-runs/instructgpt}
RLHF=${RLHF:-rlhf}
COMMON=() SFT=() RM=() PPO=()
if [ "${SMOKE:-0}" = 1 ]; then
  NPROC=${NPROC:-1}
  COMMON=(model=tiny log.progress=false train.save_every=0)
  SFT=(train.max_steps=3 data.limit=64 data.max_length=128 train.micro_batch_size=2 train.grad_accum=1 train.eval_every=0)
  RM=(train.max_steps=3 data.limit=32 data.max_length=128 train.micro_batch_size=2 train.eval_every=0)
  PPO=(train.max_steps=2 data.limit=16 data.max_length=384 ppo.prompts_per_step=2 ppo.max_new_tokens=8
       ppo.epochs=1 train.micro_batch_size=2)
fi
NPROC=${NPROC:-2}
$RLHF train sft conf=recipes/sft_example.yaml output_dir="$OUT/sft" "${COMMON[@]}" "${SFT[@]}" "$@" --nproc "$NPROC"
$RLHF train rm conf=recipes/rm_hh.yaml model.path="$OUT/sft" output_dir="$OUT/rm" "${COMMON[@]}" "${RM[@]}" "$@" \
  --nproc "$NPROC"
$RLHF train ppo conf=recipes/ppo_hh.yaml model.path="$OUT/sft" "reward.functions=[{name: model, path: $OUT/rm}]" \
  output_dir="$OUT/ppo" "${COMMON[@]}" "${PPO[@]}" "$@" --nproc "$NPROC"
echo "InstructGPT pipeline done: $OUT/ppo/final"
