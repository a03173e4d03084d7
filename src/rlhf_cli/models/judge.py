"""A judge LLM: renders judge prompts with its chat template, generates critiques / revisions / reasoning
through the rollout engine (KV cache), and reads choice-label probabilities from ONE batched forward
over prompt + question (no sampling). The maths is in ``rlhf_cli.algos.ai_feedback``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from rlhf_cli.algos.ai_feedback import choice_ids_tensor, expected_score, label_probs
from rlhf_cli.errors import ConfigError
from rlhf_cli.rollout.generate import eos_ids, generate, left_pad, supports_logits_to_keep
from rlhf_cli.rollout.sampling import SamplingParams


def label_token_ids(tokenizer, labels: Sequence[str], key: str = "judge.labels") -> List[List[int]]:
    """Each label's single-token spellings: the label itself and with a leading space (whichever the
    tokenizer encodes as ONE token). A label with no single-token spelling is a one-line ConfigError."""
    out = []
    for lab in labels:
        ids = []
        for text in (lab, " " + lab):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        if not ids:
            raise ConfigError(f"{key}: label {lab!r} is not a single token for this judge's tokenizer "
                              f"(use short labels such as A/B or digits)")
        out.append(ids)
    flat = [i for ids in out for i in ids]
    if len(set(flat)) != len(flat):
        raise ConfigError(f"{key}: labels {list(labels)} share a token")
    return out


def load_judge_model(path: str, dtype: torch.dtype = torch.float32, key: str = "judge.path",
                     attn_implementation: str = "sdpa"):
    """(model, tokenizer) from a local HF dir or run dir; one-line ConfigError if it cannot be loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_cli.models import attention  # noqa: F401  (registers sdpa_varlen)
    from rlhf_cli.models.loading import resolve_model_dir

    d = resolve_model_dir(path, key=key)
    try:
        tok = AutoTokenizer.from_pretrained(str(d))
        model = AutoModelForCausalLM.from_pretrained(str(d), dtype=dtype, attn_implementation=attn_implementation)
    except Exception as e:  # broken weights, missing tokenizer, unknown architecture...
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(f"{key}={path}: cannot load a causal LM judge from {d} ({type(e).__name__}: {msg})") \
            from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.requires_grad_(False)
    model.eval()
    return model, tok


class Judge:
    """Batched judge calls on one process. ``gathered`` materialises ZeRO-3 weights (a no-op otherwise)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, chat: bool = True,
                 gathered: Optional[Callable] = None, name: str = "judge"):
        self.model, self.tok, self.batch_size, self.chat, self.name = model, tokenizer, batch_size, chat, name
        self.gathered = gathered or (lambda module: contextlib.nullcontext())
        self.eos = eos_ids(tokenizer, model)
        self.forward_rows = 0  # rows of label-reading forwards (for the tests and the log)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def answer_prefix(self, prefix: str, labels: Sequence[str]) -> str:
        """``prefix`` so that a label can be the NEXT token: when no label is one token with a leading space
        (SmolLM2 writes " 7" as " " + "7"), the space goes at the end of the prefix instead."""
        if not prefix or prefix[-1].isspace():
            return prefix
        spaced = any(len(self.tok(" " + lab, add_special_tokens=False)["input_ids"]) == 1 for lab in labels)
        return prefix if spaced else prefix + " "

    def encode(self, user_text: str, answer_prefix: str = "", labels: Sequence[str] = ()) -> List[int]:
        """The judge prompt as token ids: chat-rendered user turn + generation prompt, then the start of the
        judge's answer (``answer_prefix``) as plain tokens, so the next token is the label."""
        if labels:
            answer_prefix = self.answer_prefix(answer_prefix, labels)
        if self.chat and getattr(self.tok, "chat_template", None):
            from rlhf_cli.data.chat import render_prompt

            ids = render_prompt(self.tok, [{"role": "user", "content": user_text}])
        else:
            ids = self.tok(user_text + "\n", add_special_tokens=False)["input_ids"]
        if answer_prefix:
            ids = ids + self.tok(answer_prefix, add_special_tokens=False)["input_ids"]
        return ids

    def text_ids(self, text: str) -> List[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def read_next_token(self, prompts: Sequence[List[int]],
                        reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``reduce(last-position logits [b, V]) -> [b, ...]`` for every prompt: ONE forward per prompt (no
        sampling), batched by length (least padding), only the last position's logits computed."""
        n = len(prompts)
        if n == 0:
            return torch.zeros(0)
        order = sorted(range(n), key=lambda i: len(prompts[i]))
        pad = self.tok.pad_token_id
        extra = {"logits_to_keep": 1} if supports_logits_to_keep(self.model) else {}
        parts, was_training = [], self.model.training
        self.model.eval()
        try:
            with self.gathered(self.model):
                for lo in range(0, n, self.batch_size):
                    ids, mask = left_pad([list(prompts[i]) for i in order[lo: lo + self.batch_size]], pad)
                    ids, mask = ids.to(self.device), mask.to(self.device)
                    pos = (mask.cumsum(-1) - 1).clamp_(min=0)
                    out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **extra)
                    parts.append(reduce(out.logits[:, -1, :]).float().cpu())
                    self.forward_rows += ids.size(0)
        finally:
            self.model.train(was_training)
        res = torch.cat(parts)
        out = torch.empty_like(res)
        out[torch.tensor(order)] = res
        return out

    def label_probs(self, prompts: Sequence[List[int]], labels: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Label probs [N, C] (renormalised over the labels) and the labels' total mass [N]."""
        ids = choice_ids_tensor(label_token_ids(self.tok, labels))

        def reduce(z):
            p, m = label_probs(z, ids)
            return torch.cat([p, m[:, None]], dim=-1)

        if not prompts:
            return torch.zeros(0, len(labels)), torch.zeros(0)
        both = self.read_next_token(prompts, reduce)
        return both[:, :-1], both[:, -1]

    def expected_rating(self, prompts: Sequence[List[int]], labels: Sequence[str],
                        values: Sequence[float]) -> torch.Tensor:
        """[N] expectation of ``values`` under the renormalised label distribution (direct RLAIF score)."""
        ids = choice_ids_tensor(label_token_ids(self.tok, labels))
        vals = torch.tensor(list(values), dtype=torch.float32)
        return self.read_next_token(prompts, lambda z: expected_score(z, ids, vals))

    def generate(self, prompts: Sequence[List[int]], params: SamplingParams,
                 generator: Optional[torch.Generator] = None) -> List[str]:
        """Sample (or greedily decode, temperature 0) one continuation per prompt; stripped texts."""
        if not prompts:
            return []
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        with self.gathered(self.model):
            out = generate(self.model, [list(prompts[i]) for i in order], params, eos_token_ids=self.eos,
                           pad_id=self.tok.pad_token_id, tokenizer=self.tok, batch_size=self.batch_size,
                           generator=generator)
        texts = [""] * len(prompts)
        for i, t in zip(order, out.texts(self.tok)):
            texts[i] = t.strip()
        return texts


def judge_dir_name(path: Optional[str]) -> str:
    return str(Path(path).resolve()) if path else "policy"
