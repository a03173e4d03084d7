"""RLAIF / Constitutional AI stage config: prompts, the judge, the constitution and both phases."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from rlhf_cli.config.ranges import num
from rlhf_cli.config.sampling import SamplingSection
from rlhf_cli.config.schema import RunConfig
from rlhf_cli.config.stages import DataConfig
from rlhf_cli.errors import ConfigError

PHASES = ("sl", "preferences", "both")
THEN = ("none", "sft", "rm", "dpo")
RESPONSES = ("sample", "data")


@dataclass
class RLAIFDataConfig(DataConfig):
    # Field holding the prompt (a string, rendered as one user turn, or chat messages). Records without it
    # are read by shape: HH-RLHF transcripts (chosen_field) give their FIRST human turn; chat records
    # (messages_field) give the conversation before the last assistant turn.
    prompt_field: str = "prompt"
    # Chat records: the conversation (its last assistant turn, if any, is dropped from the prompt).
    messages_field: str = "messages"
    # HH-RLHF transcripts, and the human pair used by rlaif.responses=data.
    chosen_field: str = "chosen"
    # The human-rejected transcript or answer (rlaif.responses=data).
    rejected_field: str = "rejected"
    # System message put before the policy's prompts; null = none.
    system_prompt: Optional[str] = None
    # Python format string applied to string prompts ("{prompt} ..."); null = as is.
    prompt_template: Optional[str] = None


@dataclass
class JudgeSection:
    # The judge LLM: a local Hugging Face model dir or a run dir (its final/). null = the policy itself
    # (same weights, loaded once: Lee et al. 2024 show a same-size judge still improves the policy).
    path: Optional[str] = None
    # Render judge prompts with the judge's chat template (false: plain text, for base models).
    chat_template: bool = True
    # Comparison labels; each must be ONE token of the judge's vocabulary (with or without a leading space).
    labels: List[str] = field(default_factory=lambda: ["A", "B"])
    # Rows per judge forward / generation batch.
    batch_size: int = num(8, ge=1)
    # Critique / revision / reasoning length (tokens).
    max_new_tokens: int = num(128, ge=1)
    # Critique / revision / reasoning sampling temperature; 0 = greedy (deterministic judge text).
    temperature: float = num(0.0, ge=0)


@dataclass
class RLAIFSection(SamplingSection):
    # A packaged constitution under conf/constitution/ ('default') or a path to your own YAML file
    # (principles + optional templates; see conf/constitution/default.yaml).
    constitution: str = "default"
    # Which phases to run: sl (critique -> revision data, CAI-SL), preferences (AI-labelled pairs, RL-AIF)
    # or both.
    phases: str = "both"
    # CAI-SL: critique -> revision rounds per prompt, a principle drawn per round (Bai et al. used up to 4).
    revisions: int = num(1, ge=0)
    # RL-AIF: where the compared responses come from. sample = K policy samples per prompt (all K(K-1)/2
    # pairs judged); data = the record's own chosen/rejected pair (relabel a human preference set with AI
    # feedback; the judge's agreement with the human label is reported).
    responses: str = "sample"
    # K, responses sampled per prompt (>= 2).
    num_responses: int = num(2, ge=2)
    # Chain-of-thought judging: the judge writes its reasoning, then the label is read after it; the
    # probabilities are clamped to cot_clamp (Bai et al. 2022, sec. 4.1: 40-60 %).
    cot: bool = False
    # [low, high] bounds of the chain-of-thought label probability.
    cot_clamp: List[float] = num(lambda: [0.4, 0.6], ge=0, le=1)
    # Prompts per process per chunk: each chunk is sampled, judged and saved in one go, and a rerun after an
    # interruption continues after the last saved chunk. Random draws are seeded per chunk, so this is part of
    # what a run computes (keep it when resuming).
    chunk_prompts: int = num(16, ge=1)
    # Keep a pair only when max(p, 1 - p) >= this (0.5 keeps all; 0.6 drops near-coin-flip labels).
    min_confidence: float = num(0.5, ge=0.5, le=1)
    # Then run this stage on the made data in the same command: none | sft (on sl_data.jsonl) | rm | dpo
    # (on preferences.jsonl). It starts from the policy and writes to output_dir/<stage>.
    then: str = "none"
    # Recipe YAML for the next stage (layered like conf=), null = its packaged defaults.
    then_conf: Optional[str] = None
    # Extra overrides for the next stage; on the command line quote each: "rlaif.then_overrides=['train.max_steps=50']".
    then_overrides: List[str] = field(default_factory=list)
    # Policy response budget (tokens): the compared responses and the SL phase's first response.
    max_new_tokens: int = num(128, ge=1)
    # Policy sampling temperature; 0 = greedy.
    temperature: float = num(1.0, ge=0)


@dataclass
class RLAIFConfig(RunConfig):
    data: RLAIFDataConfig = field(default_factory=RLAIFDataConfig)
    judge: JudgeSection = field(default_factory=JudgeSection)
    rlaif: RLAIFSection = field(default_factory=RLAIFSection)

    @staticmethod
    def check(cfg) -> None:
        check_rlaif(cfg)


def check_rlaif(cfg) -> None:
    r, j = cfg.rlaif, cfg.judge
    for key, value, options in (("rlaif.phases", r.phases, PHASES), ("rlaif.then", r.then, THEN),
                                ("rlaif.responses", r.responses, RESPONSES)):
        if value not in options:
            raise ConfigError(f"{key}={value}: must be one of {', '.join(options)}")
    if r.revisions < 1 and r.phases != "preferences":
        raise ConfigError(f"rlaif.revisions={r.revisions}: must be >= 1")
    if len(r.cot_clamp) != 2 or not r.cot_clamp[0] <= 0.5 <= r.cot_clamp[1]:
        raise ConfigError(f"rlaif.cot_clamp={list(r.cot_clamp)}: must be [low, high] with 0 <= low <= 0.5 <= high <= 1")
    if len(j.labels) != 2 or len(set(j.labels)) != 2 or not all(isinstance(x, str) and x for x in j.labels):
        raise ConfigError(f"judge.labels={list(j.labels)}: needs two different non-empty labels")
    if cfg.data.max_length <= r.max_new_tokens:
        raise ConfigError(f"data.max_length={cfg.data.max_length} must exceed rlaif.max_new_tokens="
                          f"{r.max_new_tokens} (the rest is the prompt budget)")
    if r.then == "sft" and r.phases == "preferences":
        raise ConfigError("rlaif.then=sft needs the sl phase (rlaif.phases=sl or both)")
    if r.then in ("rm", "dpo") and r.phases == "sl":
        raise ConfigError(f"rlaif.then={r.then} needs the preferences phase (rlaif.phases=preferences or both)")
    from pathlib import Path

    if r.then_conf:
        if not Path(r.then_conf).is_file():
            raise ConfigError(f"rlaif.then_conf={r.then_conf}: file not found")
    if j.path:
        from rlhf_cli.models.loading import resolve_model_dir

        resolve_model_dir(j.path, key="judge.path")
    from rlhf_cli.data.constitution import load_constitution

    const = load_constitution(r.constitution)
    if r.constitution != "default" and Path(r.constitution).expanduser().exists():
        r.constitution = str(const.path)
