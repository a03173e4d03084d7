"""Scalar reward models: build, train-time forward, and a scorer for RL stages.

Format of a saved reward model (``final/`` of an rm run): a plain Hugging Face
``AutoModelForSequenceClassification`` dir with ``num_labels=1`` (backbone + linear ``score`` head), plus
``reward_config.json``::

    {"type": "outcome" | "process", "score_position": "last_token", "template": "chat" | "plain",
     "max_length": 512, "step_delimiter": "\\n", "aggregate": "min"}

``score_position: last_token`` means the score is the head's output at the LAST ATTENDED token of
prompt + answer (from the attention mask, right padding). Hugging Face's own pooling instead picks the
last token that differs from ``pad_token_id``; SmolLM2's pad token is its EOS ``<|im_end|>``, so on
sequences that end with EOS it would score the wrong position. ``RewardModelScorer`` pools correctly.
Process RMs score each step at the last token of the step's delimiter; the step score is
``sigmoid(logit)`` = P(step correct).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import torch

REWARD_CONFIG = "reward_config.json"


class ScalarRewardModel(torch.nn.Module):
    """Wraps an ``AutoModelForSequenceClassification`` and returns the head's value at every position."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model

    @property
    def config(self):
        return self.hf.config

    def head(self):
        return getattr(self.hf, "score", None) or self.hf.classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        hidden = self.hf.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    use_cache=False).last_hidden_state
        return self.head()(hidden).squeeze(-1).float()  # [N, T]

    def save_pretrained(self, path, state_dict=None, **kwargs):
        if state_dict is not None:
            state_dict = {k[len("hf."):] if k.startswith("hf.") else k: v for k, v in state_dict.items()}
        self.hf.config.architectures = [type(self.hf).__name__]
        self.hf.save_pretrained(path, state_dict=state_dict, **kwargs)


def last_token_scores(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``values[n, last attended position of row n]`` for right-padded rows -> ``[N]``."""
    last = attention_mask.long().sum(dim=1).clamp(min=1) - 1
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


def build_reward_model(mcfg, tokenizer, seed: int, dtype: torch.dtype = torch.float32,
                       key: str = "model.path") -> ScalarRewardModel:
    """A reward model from a causal-LM dir / previous run / the tiny preset (new head, seeded init), or
    an existing reward model dir (its head kept)."""
    from transformers import AutoModelForSequenceClassification

    from rlhf_cli.models import attention  # noqa: F401  (registers sdpa_varlen)
    from rlhf_cli.models.families import attention_for
    from rlhf_cli.models.loading import model_source, tiny_config

    fresh_head = True
    if mcfg.name == "tiny" and not mcfg.path:
        cfg = tiny_config(mcfg.tiny, tokenizer)
        cfg.num_labels = 1
        cfg._attn_implementation = attention_for(cfg, mcfg.attn_implementation)
        with torch.random.fork_rng():
            torch.manual_seed(mcfg.tiny.seed)
            hf = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype)
    else:
        from transformers import AutoConfig

        src = model_source(mcfg, key)
        fresh_head = not (Path(src) / REWARD_CONFIG).exists()
        attn = attention_for(AutoConfig.from_pretrained(str(src), trust_remote_code=mcfg.trust_remote_code),
                             mcfg.attn_implementation)
        hf = AutoModelForSequenceClassification.from_pretrained(
            str(src), num_labels=1, dtype=dtype, attn_implementation=attn,
            trust_remote_code=mcfg.trust_remote_code)
    hf.config.pad_token_id = tokenizer.pad_token_id
    hf.config.use_cache = False
    model = ScalarRewardModel(hf)
    if fresh_head:  # the same weights on every process and rerun: N(0, 1/(hidden+1)) as in OpenRLHF
        w = model.head().weight
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w.copy_(torch.randn(w.shape, generator=g) / (hf.config.hidden_size + 1) ** 0.5)
            if getattr(model.head(), "bias", None) is not None:
                model.head().bias.zero_()
    if mcfg.gradient_checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def reward_config_text(rm, data, max_length: int, summary: Optional[dict] = None) -> str:
    """reward_config.json; with the training summary, also the score statistics (held-out when there is
    an eval split) that ``{name: model, normalize: true}`` uses to put scores on mean 0, std 1."""
    out = {"type": rm.type, "score_position": "last_token" if rm.type == "outcome" else "step_delimiter_last_token",
           "template": data.template, "max_length": max_length, "step_delimiter": rm.step_delimiter,
           "aggregate": rm.aggregate}
    summary = summary or {}
    for prefix in ("eval/", ""):
        if f"{prefix}reward_mean" in summary and f"{prefix}reward_std" in summary:
            out.update(score_mean=summary[f"{prefix}reward_mean"], score_std=summary[f"{prefix}reward_std"],
                       score_stats_from="held-out pairs" if prefix else "the last training step")
            break
    return json.dumps(out, indent=2)


class RewardModelScorer:
    """Score (prompt, completion) pairs with a trained reward model, rendered exactly as in training.

    ``score(prompts, completions) -> list[float]``: outcome RMs give the scalar reward; process RMs split
    each completion into steps at the delimiter and give the aggregate (min or prod) of the step
    probabilities. ``score_steps`` gives the per-step probabilities (dense rewards).
    """

    def __init__(self, path: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rlhf_cli.data.preference import Encoder
        from rlhf_cli.models.loading import inference_device_dtype, resolve_model_dir

        root = resolve_model_dir(path, key="rm.path")
        self.root = root
        cfg_file = root / REWARD_CONFIG
        self.cfg = {"type": "outcome", "template": "chat", "max_length": 2048, "step_delimiter": "\n",
                    "aggregate": "min", **(json.loads(cfg_file.read_text()) if cfg_file.exists() else {})}
        self.device, dt = inference_device_dtype(device, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(root))
        from rlhf_cli.models.attention import NAME as VARLEN

        hf = AutoModelForSequenceClassification.from_pretrained(str(root), dtype=dt, attn_implementation=VARLEN)
        self.model = ScalarRewardModel(hf).to(self.device).eval()
        self.batch_size = batch_size
        self.encoder = Encoder(self.tokenizer, self.cfg["template"], self.cfg["max_length"])

    @torch.no_grad()
    def values(self, seqs: Sequence[List[int]], positions: Optional[Sequence[List[int]]] = None):
        """Head outputs at the last token of each sequence, or at the given positions of each sequence;
        ``batch_size`` sequences per padding-free forward (``collate_flat``: no padding token is scored)."""
        from rlhf_cli.data.packing import collate_flat, example_row

        out: list = []
        for k in range(0, len(seqs), self.batch_size):
            chunk = seqs[k:k + self.batch_size]
            flat = collate_flat([example_row(x, [0] * len(x)) for x in chunk])
            v = self.model(flat.input_ids.to(self.device), None, position_ids=flat.position_ids.to(self.device))
            v, start = v[0].cpu(), 0
            for j, x in enumerate(chunk):
                at = [len(x) - 1] if positions is None else positions[k + j]
                vals = [float(v[start + p]) for p in at]
                out.append(vals[0] if positions is None else vals)
                start += len(x)
        return out

    def score_ids(self, seqs: Sequence[List[int]]) -> List[float]:
        return self.values(seqs)

    def score_steps(self, prompts: Sequence, steps: Sequence[List[str]]) -> List[List[float]]:
        enc = [self.encoder.encode_steps(p, s, self.cfg["step_delimiter"]) for p, s in zip(prompts, steps)]
        logits = self.values([ids for ids, _ in enc], [ends for _, ends in enc])
        return [torch.sigmoid(torch.tensor(x)).tolist() for x in logits]

    def score(self, prompts: Sequence, completions: Sequence[str]) -> List[float]:
        if self.cfg["type"] == "process":
            delim = self.cfg["step_delimiter"]
            steps = [[s for s in c.split(delim) if s.strip()] or [c] for c in completions]
            from rlhf_cli.algos.reward_model import aggregate_step_scores

            out = []
            for probs in self.score_steps(prompts, steps):
                t = torch.tensor([probs])
                valid = torch.ones_like(t, dtype=torch.bool)
                out.append(float(aggregate_step_scores(t, valid, self.cfg["aggregate"])[0]))
            return out
        seqs = []
        for p, c in zip(prompts, completions):
            pids, (a,), _ = self.encoder.encode(p, [c])
            seqs.append(pids + a)
        return self.values(seqs)
