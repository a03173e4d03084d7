"""DPO-family stage config: the loss and its knobs, and the reference model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlhf_cli.config.ranges import num
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
    beta: float = num(0.1, gt=0)
    # cdpo/dpo/simpo: probability that a preference label is flipped; null = 0.1 for cdpo, else 0.
    label_smoothing: Optional[float] = num(None, ge=0, lt=0.5)
    # ipo: regulariser; the target log-ratio gap is 1/(2 tau).
    tau: float = num(0.1, gt=0)
    # simpo: target reward margin gamma.
    gamma: float = num(0.5, ge=0)
    # kto: weights of desirable / undesirable examples (lambda_D, lambda_U); balance them when the data is
    # unbalanced (the KTO paper keeps lambda_D * n_D / (lambda_U * n_U) in [1, 4/3]).
    desirable_weight: float = num(1.0, gt=0)
    # lambda_U, the weight of undesirable examples.
    undesirable_weight: float = num(1.0, gt=0)
    # Sequence positions per fp32 log-softmax chunk (memory vs speed; never a full B x T x V fp32 copy).
    logprob_chunk_size: int = num(512, ge=1)


@dataclass
class RefSection(FrozenModelConfig):
    # (path: reference model dir; null = a frozen copy of the starting policy, model.*.)
    # Compute reference log-probs once over the dataset before training and keep them with the data, so
    # the reference model is freed before training starts. false = keep it live (ZeRO-3 sharded under
    # engine=zero3 with several processes) and run it on every batch.
    precompute: bool = True
    # Rows per reference forward when precomputing.
    batch_size: int = num(8, ge=1)


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
        if d.loss == "cdpo" and d.label_smoothing == 0:
            raise ConfigError("dpo.loss=cdpo needs dpo.label_smoothing > 0 (use dpo.loss=dpo for 0)")
