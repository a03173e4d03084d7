"""Per-stage config schemas: the shared RunConfig plus the sections one stage adds.

``STAGES`` maps a stage name to its schema and a one-line description (``rlhf stages``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Dict, Optional, Type

from rlhf_cli.config.ranges import num
from rlhf_cli.config.schema import MISSING, RunConfig


@dataclass
class DataConfig:
    """Where the data is and how long a sequence may be; shape-specific fields are in the subclasses."""

    # Training file: .jsonl, .jsonl.gz, .json, .parquet, or a datasets.save_to_disk dir; 'builtin:NAME' names
    # an example file shipped with rlhf-cli (the package's examples/ folder); 'org/name' (no such local path)
    # a dataset on the Hugging Face Hub (data.subset, data.split, data.revision).
    path: str = MISSING
    # Hub datasets: the config (subset) name; null = the dataset's default.
    subset: Optional[str] = None
    # Hub datasets: the split, optionally sliced: train, test, train[:1000], train[10:20], train[:1%].
    split: str = "train"
    # Hub datasets: a branch, tag or commit (null = main); the manifest records the commit read.
    revision: Optional[str] = None
    # Held-out file (or Hub dataset); null = split eval_fraction of path off (deterministic by seed).
    eval_path: Optional[str] = None
    # Hub datasets: the held-out split eval_path reads (e.g. eval_path=<the same id> eval_split=test).
    eval_split: str = "test"
    # Share of path held out for evaluation when eval_path is null (0 = no held-out split).
    eval_fraction: float = num(0.05, ge=0, lt=1)
    # Tokens per sequence (prompt + response); longer examples are truncated (counted in the metrics).
    max_length: int = num(512, ge=1)
    # Skip malformed records (with a count in the log) instead of stopping at the first one.
    skip_bad: bool = False
    # Use only the first N records of path (0 = all): quick experiments.
    limit: int = num(0, ge=0)
    # Shuffle rows each epoch (seeded; resume reproduces the order).
    shuffle: bool = True


@dataclass
class SFTDataConfig(DataConfig):
    # Record shape: auto (detect per record) | messages | conversations | prompt_completion | text.
    format: str = "auto"
    # String prompt/completion records: auto (the chat template when the tokenizer has one, as TRL renders
    # conversational data) | chat | plain (prompt text + completion text + EOS).
    template: str = "auto"
    # Field names, for data whose columns are named differently.
    messages_field: str = "messages"
    # ShareGPT / Capybara turns: [{from: human|gpt|system, value}] (or role/content).
    conversations_field: str = "conversations"
    # The prompt of a prompt/completion record (a string or chat messages).
    prompt_field: str = "prompt"
    # The response of a prompt/completion record: the only tokens trained on.
    completion_field: str = "completion"
    # Plain text of a text record: every token is trained on.
    text_field: str = "text"
    # Pack several examples into each row (attention and positions stay per example). Off = length-bucketed
    # padding.
    packing: bool = True
    # Lay each micro-batch's rows end to end in one row (no padding token at all; attention and positions
    # stay per example). Off = rows padded to the micro-batch's longest.
    padding_free: bool = True


@dataclass
class SFTConfig(RunConfig):
    data: SFTDataConfig = field(default_factory=SFTDataConfig)


@dataclass
class StageInfo:
    # "module:Class" of the stage's schema (imported on first use, so one stage's module never slows
    # or breaks another), the runner module, and a one-line description for `rlhf stages`.
    schema_ref: str
    runner: str
    description: str

    @property
    def schema(self) -> Type[RunConfig]:
        module, _, name = self.schema_ref.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: Dict[str, StageInfo] = {
    "sft": StageInfo("rlhf_cli.config.stages:SFTConfig", "rlhf_cli.stages.sft",
                     "Supervised fine-tuning on chat, prompt/completion or plain-text data."),
    "rm": StageInfo("rlhf_cli.config.stage_rm:RMConfig", "rlhf_cli.stages.rm",
                    "Reward model: Bradley-Terry / Plackett-Luce on preferences, or a process reward model."),
    "dpo": StageInfo("rlhf_cli.config.stage_dpo:DPOConfig", "rlhf_cli.stages.dpo",
                     "Direct preference optimisation family: dpo, ipo, cdpo, kto, simpo (loss=...)."),
    "ppo": StageInfo("rlhf_cli.config.stage_ppo:PPOConfig", "rlhf_cli.stages.ppo",
                     "PPO (InstructGPT): actor + critic, KL-shaped reward, GAE, PPO-ptx; reward models or rules."),
    "grpo": StageInfo("rlhf_cli.config.stage_grpo:GRPOConfig", "rlhf_cli.stages.grpo",
                      "Group Relative Policy Optimization with verifiable rewards (math, code, regex, RM)."),
    "rlaif": StageInfo("rlhf_cli.config.stage_rlaif:RLAIFConfig", "rlhf_cli.stages.rlaif",
                       "RLAIF / Constitutional AI: critique-revision SFT data and AI-labelled soft preferences."),
}
