"""Reward-model stage config, and the preference data section shared with the dpo stage."""
from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_cli.config.ranges import num
from rlhf_cli.config.schema import RunConfig
from rlhf_cli.config.stages import DataConfig
from rlhf_cli.errors import ConfigError

PREFERENCE_FORMATS = ("auto", "pairwise", "hh", "ranking", "kto", "process")


@dataclass
class PreferenceDataConfig(DataConfig):
    # Record shape: auto (detect per record) | pairwise (prompt, chosen, rejected) | hh (chosen/rejected
    # full "\n\nHuman: ... \n\nAssistant: ..." transcripts) | ranking (prompt, responses best->worst,
    # optional ranks) | kto (prompt, completion, label) | process (prompt, steps, labels).
    format: str = "auto"
    # How string prompts are rendered: chat (one user turn through the tokenizer's chat template, the
    # response as the assistant turn) | plain (prompt text + response text + EOS). Message lists and HH
    # transcripts always use the chat template when template=chat.
    template: str = "chat"
    # Tokens per prompt + response (redeclared: a pair needs room for a prompt and two answers).
    max_length: int = num(512, ge=8)
    # Field names, for data whose columns are named differently.
    prompt_field: str = "prompt"
    # Pairwise: the preferred response (or a whole HH-RLHF transcript, split into prompt and answer).
    chosen_field: str = "chosen"
    # Pairwise: the dispreferred response (or transcript).
    rejected_field: str = "rejected"
    # Optional per-pair margin (Llama 2), used by rm.loss=bradley_terry when present.
    margin_field: str = "margin"
    # Optional per-pair probability that chosen is the better answer (a soft label: RLAIF's judge_prob,
    # Lee et al. 2023), in [0, 1].
    prob_field: str = "judge_prob"
    # Train on prob_field where a pair has it: soft Bradley-Terry for rm, the DPO-family loss averaged over
    # both label orders (label-smoothed DPO with eps = 1 - p per pair) for dpo. false = hard labels.
    soft_labels: bool = True
    # K-wise ranking: the responses, best first unless ranks_field is given.
    responses_field: str = "responses"
    # K-wise ranking: one rank per response (0 = best, ties allowed).
    ranks_field: str = "ranks"
    # KTO: the unpaired response.
    completion_field: str = "completion"
    # KTO: true = desirable, false = undesirable.
    label_field: str = "label"
    # Process supervision: the solution's steps (each scored at its delimiter token).
    steps_field: str = "steps"
    # Process supervision: one 1/0 (correct/incorrect) label per step.
    labels_field: str = "labels"
    # Lay a micro-batch's sequences (every pair's chosen and rejected) end to end in one row: no padding
    # token at all, attention and positions stay per sequence. Off = sequences padded to the longest.
    padding_free: bool = True


@dataclass
class RMSection:
    # outcome: one score per response (pairs or rankings) | process: one score per reasoning step
    # (Lightman et al. 2023), trained with binary cross-entropy on step labels.
    type: str = "outcome"
    # Outcome loss: bradley_terry (pairs; rankings use all their strict pairs) | plackett_luce |
    # pairwise_from_ranking (InstructGPT: the mean over all K-choose-2 pairs of a ranking).
    loss: str = "bradley_terry"
    # Reward-centering auxiliary term lambda * (r_c + r_r)^2 (Eisenstein et al. 2023); 0 = off.
    centering_coef: float = num(0.0, ge=0)
    # Process RMs: text appended after each step; its last token is where the step is scored.
    step_delimiter: str = "\n"
    # Process RMs: solution score from step scores at inference: min | prod.
    aggregate: str = "min"


@dataclass
class RMConfig(RunConfig):
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    rm: RMSection = field(default_factory=RMSection)

    @staticmethod
    def check(cfg) -> None:
        check_preference_data(cfg)
        if cfg.model.lora.r > 0:
            raise ConfigError("model.lora.r > 0: the rm stage does not take LoRA yet (sft, dpo, grpo, ppo's actor "
                              "do); set model.lora.r=0")
        choose("rm.type", cfg.rm.type, ("outcome", "process"))
        choose("rm.aggregate", cfg.rm.aggregate, ("min", "prod"))
        if cfg.rm.type == "process" and cfg.data.format not in ("auto", "process"):
            raise ConfigError(f"rm.type=process needs data.format=process (or auto), got {cfg.data.format}")


def choose(key: str, value, options) -> None:
    options = list(options)
    if value not in options:
        from rlhf_cli.text import closest

        raise ConfigError(f"{key}={value}: must be one of {', '.join(options)}{closest(str(value), options)}")


def check_preference_data(cfg) -> None:
    choose("data.format", cfg.data.format, PREFERENCE_FORMATS)
    choose("data.template", cfg.data.template, ("chat", "plain"))


