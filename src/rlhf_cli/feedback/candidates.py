"""The items of a labelling session: a prompt and K candidate responses, shuffled, with their models hidden.

Candidates come from a file (``candidates=FILE``: records ``{prompt, responses, models}``, responses as
strings with a parallel ``models`` list, or as ``{"text", "model"}`` objects) or are sampled from one or more
checkpoints (``models=[runs/sft,runs/dpo] k=4``: candidate i comes from model i mod M, so every model writes
about K/M of them). The display order of each item is shuffled by a generator seeded from (seed, prompt),
so a resumed session shows an item exactly as before. Empty responses are dropped; an item with fewer than
two candidates left is not shown (and reported).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence

from rlhf_cli.data.prompts import prompt_messages, read_prompt_messages
from rlhf_cli.data.readers import read_records, resolve_data_path
from rlhf_cli.errors import DataError
from rlhf_cli.feedback.rankings_io import item_key


@dataclass
class Item:
    prompt: object  # as in the prompts file (string or messages); written back unchanged
    text: str  # what the annotator reads (the conversation, flattened)
    responses: List[str]  # display order
    models: List[str]  # which model wrote each response (never shown)


def _display(messages: Sequence[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def shuffled(prompt, responses: List[str], models: List[str], seed: int):
    keep = [(r, m) for r, m in zip(responses, models) if r.strip()]
    h = int(hashlib.sha256(f"{seed}:{item_key(prompt)}".encode()).hexdigest()[:16], 16)
    random.Random(h).shuffle(keep)
    return [r for r, _ in keep], [m for _, m in keep]


def read_prompts(path: str, prompt_field: str = "prompt") -> List[tuple]:
    """-> [(prompt as in the file, chat messages)]."""
    return read_prompt_messages(path, prompt_field, key="prompts")


def read_candidates(path: str, seed: int, prompt_field: str = "prompt") -> List[Item]:
    items = []
    for line, rec in read_records(resolve_data_path(path, key="candidates")):
        try:
            msgs, _ = prompt_messages(rec, prompt_field)
            resp = rec.get("responses")
            if not isinstance(resp, list) or len(resp) < 2:
                raise ValueError("'responses' must be a list of at least 2 candidates")
            if all(isinstance(r, dict) for r in resp):
                texts = [r.get("text") for r in resp]
                models = [r.get("model", "unknown") for r in resp]
            else:
                texts = resp
                models = rec.get("models", ["unknown"] * len(resp))
            if not all(isinstance(t, str) for t in texts):
                raise ValueError("every response must be a string (or {\"text\": ..., \"model\": ...})")
            if not isinstance(models, list) or len(models) != len(texts) or not all(isinstance(m, str) for m in models):
                raise ValueError(f"'models' must name the model of each of the {len(texts)} responses")
        except ValueError as e:
            raise DataError(f"{path}:{line}: {e}") from None
        r, m = shuffled(rec[prompt_field], texts, models, seed)
        items.append(Item(rec[prompt_field], _display(msgs), r, m))
    if not items:
        raise DataError(f"{path}: no candidates")
    return items


def sample_items(prompts: List[tuple], model_paths: Sequence[str], k: int, seed: int, max_new_tokens: int,
                 temperature: float, top_p: float, log=print, indices: Optional[Sequence[int]] = None) -> List[Item]:
    """K candidates per prompt from the checkpoints (round-robin), on the rollout engine."""
    from rlhf_cli.models.loading import load_for_generation
    from rlhf_cli.rollout.complete import sample_texts
    from rlhf_cli.rollout.sampling import SamplingParams

    M = len(model_paths)
    per_model = [len(range(i, k, M)) for i in range(M)]
    texts: List[List[List[str]]] = []
    for i, path in enumerate(model_paths):
        if per_model[i] == 0:
            texts.append([[] for _ in prompts])
            continue
        log(f"sampling {per_model[i]} responses for each of {len(prompts)} prompts from {path} ...")
        lm, tok = load_for_generation(path)
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        texts.append(sample_texts(lm, tok, [m for _, m in prompts], per_model[i], params, seed=seed + 7919 * i,
                                  indices=indices))
        del lm
    items = []
    for j, (prompt, msgs) in enumerate(prompts):
        responses, models = [], []
        for slot in range(k):
            i = slot % M
            responses.append(texts[i][j][slot // M])
            models.append(model_paths[i])
        r, m = shuffled(prompt, responses, models, seed)
        items.append(Item(prompt, _display(msgs), r, m))
    return items
