"""The policy-sampling fields every generating stage shares (grpo, ppo, rlaif): one declaration, one
conversion (``rollout.sampling.SamplingParams.from_section``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from rlhf_cli.config.ranges import num


@dataclass
class SamplingSection:
    # Generation budget per response (tokens). data.max_length - this is the prompt budget.
    max_new_tokens: int = num(256, ge=1)
    # Sampling temperature.
    temperature: float = num(1.0, gt=0)
    # Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = off).
    top_p: float = num(1.0, gt=0, le=1)
    # Keep the k most likely tokens (0 = off).
    top_k: int = num(0, ge=0)
    # Responses stop once their text contains one of these strings (besides EOS).
    stop_strings: List[str] = field(default_factory=list)
    # Rows per generation forward (0 = all of this process's prompts, times their responses, at once).
    generation_batch_size: int = num(0, ge=0)
