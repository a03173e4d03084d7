#!/usr/bin/env bash
# SFT -> reward model and SFT -> DPO, chained through model.path (each stage reads the previous final/).
#   bash recipes/dpo.sh [NPROC]
set -euo pipefail
NPROC=${1:-2}
rlhf train sft conf=recipes/sft_example.yaml output_dir=runs/sft --nproc "$NPROC"
rlhf train rm conf=recipes/rm_hh.yaml model.path=runs/sft/final output_dir=runs/rm --nproc "$NPROC"
rlhf eval rm-accuracy model=runs/rm data=builtin:hh_harmless_sample.jsonl
rlhf train dpo conf=recipes/dpo_hh.yaml model.path=runs/sft/final output_dir=runs/dpo --nproc "$NPROC"
