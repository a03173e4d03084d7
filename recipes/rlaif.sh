#!/usr/bin/env bash
# SFT -> RLAIF (Constitutional AI: critique/revision data + AI-labelled soft preferences) -> DPO on those
# preferences, chained through model.path and data.path.
#   bash recipes/rlaif.sh [key=value ...]        # extra overrides go to every stage (shared keys only)
#   SMOKE=1 bash recipes/rlaif.sh                # tiny random model, a few steps: checks the plumbing in ~2 min
# Environment: NPROC (default 1), OUT (default runs/rlaif-pipeline), RLHF (default: rlhf).
set -euo pipefail
NPROC=${NPROC:-1}
OUT=${OUT:-runs/rlaif-pipeline}
RLHF=${RLHF:-rlhf}
SFT_ARGS=() RLAIF_ARGS=() DPO_ARGS=()
if [[ "${SMOKE:-0}" == "1" ]]; then
  COMMON=(model=tiny data.max_length=128 log.progress=false overwrite=true)
  SFT_ARGS=("${COMMON[@]}" train.max_steps=2 data.limit=16 train.save_every=0)
  RLAIF_ARGS=("${COMMON[@]}" data.limit=4 rlaif.revisions=1 rlaif.num_responses=3 rlaif.max_new_tokens=8
              judge.max_new_tokens=8 rlaif.min_confidence=0.5)
  DPO_ARGS=("${COMMON[@]}" train.max_steps=2 data.eval_fraction=0 train.save_every=0)
fi
$RLHF train sft conf=recipes/sft_example.yaml output_dir="$OUT/sft" --nproc "$NPROC" ${SFT_ARGS[@]+"${SFT_ARGS[@]}"} "$@"
$RLHF train rlaif conf=recipes/rlaif_cai.yaml model.path="$OUT/sft" rlaif.then=none output_dir="$OUT/rlaif" \
  --nproc "$NPROC" ${RLAIF_ARGS[@]+"${RLAIF_ARGS[@]}"} "$@"
$RLHF train dpo conf=recipes/dpo_hh.yaml model.path="$OUT/sft" data.path="$OUT/rlaif/preferences.jsonl" \
  output_dir="$OUT/dpo" --nproc "$NPROC" ${DPO_ARGS[@]+"${DPO_ARGS[@]}"} "$@"
echo "RLAIF pipeline done: $OUT/{sft,rlaif,dpo}"
