#!/usr/bin/env bash
# The human-feedback loop: SFT -> people rank its answers in the terminal (rlhf label) -> a reward model on
# the rankings -> DPO on each ranking's best-vs-worst pair -> SFT and DPO rated against each other
# (win-rate judged by that reward model, then Bradley-Terry/Elo ratings).
#   bash recipes/human_loop.sh [key=value ...]     # training overrides go to every training stage
#   SMOKE=1 bash recipes/human_loop.sh             # tiny model; scripted key presses stand in for the person
# Environment: OUT (runs/human-loop), NPROC (1), RLHF (rlhf), PYTHON (python3), ANNOTATOR ($USER), K (4).
set -euo pipefail
OUT=${OUT:-runs/human-loop}
NPROC=${NPROC:-1}
RLHF=${RLHF:-rlhf}
PYTHON=${PYTHON:-python3}
K=${K:-4}
LIMIT=${LIMIT:-50}
COMMON=() STEPS=() GEN=() LABEL_KEYS=()
mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then
  K=2 LIMIT=6
  COMMON=(model=tiny log.progress=false train.save_every=0 data.max_length=128)
  STEPS=(train.max_steps=2 train.micro_batch_size=2 train.grad_accum=1 data.eval_fraction=0 train.eval_every=0)
  GEN=(max_new_tokens=8)
  for _ in $(seq "$LIMIT"); do echo "1 enter"; done > "$OUT/keys.txt"  # "response 1 is best", every item
  LABEL_KEYS=("keys=$OUT/keys.txt")
fi
PROMPTS=builtin:gsm8k_prompts.jsonl
$RLHF train sft conf=recipes/sft_example.yaml output_dir="$OUT/sft" "${COMMON[@]}" "${STEPS[@]}" data.limit=64 "$@" \
  --nproc "$NPROC"
$RLHF label prompts=$PROMPTS prompt_field=question models="[$OUT/sft]" k="$K" limit="$LIMIT" \
  out="$OUT/rankings.jsonl" annotator="${ANNOTATOR:-${USER:-annotator}}" "${GEN[@]}" "${LABEL_KEYS[@]}"
$RLHF train rm model.path="$OUT/sft" data.path="$OUT/rankings.jsonl" data.format=ranking output_dir="$OUT/rm" \
  "${COMMON[@]}" "${STEPS[@]}" "$@" --nproc "$NPROC"
# DPO learns from the same judgements: each ranking's best answer against its worst.
"$PYTHON" - "$OUT/rankings.jsonl" "$OUT/pairs.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        best, worst = r["ranks"].index(min(r["ranks"])), r["ranks"].index(max(r["ranks"]))
        if r["ranks"][best] < r["ranks"][worst]:
            out.write(json.dumps({"prompt": r["prompt"], "chosen": r["responses"][best],
                                  "rejected": r["responses"][worst]}) + "\n")
PY
$RLHF train dpo model.path="$OUT/sft" data.path="$OUT/pairs.jsonl" output_dir="$OUT/dpo" "${COMMON[@]}" \
  "${STEPS[@]}" "$@" --nproc "$NPROC"
$RLHF eval win-rate model_a="$OUT/sft" model_b="$OUT/dpo" data=$PROMPTS prompt_field=question judge=rm \
  rm="$OUT/rm" limit="$LIMIT" judgements="$OUT/battles.jsonl" "${GEN[@]}" out="$OUT/win_rate.json"
$RLHF elo "$OUT/battles.jsonl" out="$OUT/elo.json"
echo "human-feedback loop done: $OUT/{sft,rankings.jsonl,rm,dpo,win_rate.json,elo.json}"
