"""DPO-family stage config: the loss and its knobs, and the reference model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlhf_cli.config.schema import FrozenModelConfig, RunConfig
from rlhf_cli.config.stage_rm import PreferenceDataConfig, check_preference_data
from rlhf_cli.errors import ConfigError


@dataclass
class DPOSection:
    # dpo (sigmoid, Rafailov 2023) | cdpo (label-smoothed DPO) | ipo (Azar 2023) | simpo (reference-free,
    # Meng 2024) | kto (unpaired good/bad completions, Ethayarajh 2024).
    loss: str = "dpo"
    # Inverse temperature of the implicit reward beta * log(pi/ref); 0.1 is the DPO paper's value.
    # SimPO uses larger values (2.0-2.5) since its log-probs are length-averaged.
    beta: float = 0.1
    # cdpo/dpo/simpo: probability that a preference label is flipped; null = 0.1 for cdpo, else 0.
    label_smoothing: Optional[float] = None
    # ipo: regulariser; the target log-ratio gap is 1/(2 tau).
    tau: float = 0.1
    # simpo: target reward margin gamma.
    gamma: float = 0.5
    # kto: weights of desirable / undesirable examples (lambda_D, lambda_U); balance them when the data is
    # unbalanced (the KTO paper keeps lambda_D * n_D / (lambda_U * n_U) in [1, 4/3]).
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    # Sequence positions per fp32 log-softmax chunk (memory vs speed; never a full B x T x V fp32 copy).
    logprob_chunk_size: int = 512


@dataclass
class RefSection(FrozenModelConfig):
    # (path: reference model dir; null = a frozen copy of the starting policy, model.*.)
    # Compute reference log-probs once over the dataset before training and keep them with the data, so
    # the reference model is freed before training starts. false = keep it live (ZeRO-3 sharded under
    # engine=zero3 with several processes) and run it on every batch.
    precompute: bool = True
    # Rows per reference forward when precomputing.
    batch_size: int = 8


@dataclass
class DPOConfig(RunConfig):
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    dpo: DPOSection = field(default_factory=DPOSection)
    ref: RefSection = field(default_factory=RefSection)

    @staticmethod
    def check(cfg) -> None:
        check_preference_data(cfg)
        d = cfg.dpo
        if cfg.data.format in ("ranking", "process"):
            raise ConfigError(f"data.format={cfg.data.format}: the dpo stage takes pairwise, hh or kto data")
        if d.beta <= 0 or d.tau <= 0:
            raise ConfigError("dpo.beta and dpo.tau must be > 0")
        ls = d.label_smoothing
        if ls is not None and not 0 <= ls < 0.5:
            raise ConfigError(f"dpo.label_smoothing={ls}: must be in [0, 0.5)")
        if d.loss == "cdpo" and ls == 0:
            raise ConfigError("dpo.loss=cdpo needs dpo.label_smoothing > 0 (use dpo.loss=dpo for 0)")
        if min(d.desirable_weight, d.undesirable_weight) <= 0:
            raise ConfigError("dpo.desirable_weight and dpo.undesirable_weight must be > 0")
        if d.logprob_chunk_size < 1 or cfg.ref.batch_size < 1:
            raise ConfigError("dpo.logprob_chunk_size and ref.batch_size must be >= 1")
