"""Chat-template tokenisation with an assistant-token mask.

The loss mask is found by rendering the conversation incrementally: for each assistant turn, the tokens
between ``template(messages[:i], add_generation_prompt=True)`` and ``template(messages[:i+1])`` are that
turn's answer (its end-of-turn token included, so the model learns to stop). This works for any
template whose renderings of a conversation's prefixes are token prefixes of each other, which is
checked: a template that breaks it raises instead of training on the wrong tokens.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

ROLES = ("system", "user", "assistant")


def validate_messages(messages) -> str | None:
    """Return why ``messages`` is not a valid conversation, or None."""
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"message {i} needs 'role' and 'content'"
        if m["role"] not in ROLES:
            return f"message {i} has role '{m['role']}' (expected one of {', '.join(ROLES)})"
        if not isinstance(m["content"], str):
            return f"message {i} content must be a string"
    return None


def render_messages(tokenizer, messages, add_generation_prompt: bool) -> List[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if hasattr(out, "keys"):  # BatchEncoding in newer transformers
        out = out["input_ids"]
    return list(out)


def tokenize_chat(tokenizer, messages: Sequence[dict]) -> Tuple[List[int], List[int]]:
    """Return (input_ids, loss_mask) with loss_mask=1 exactly on assistant-turn tokens."""
    ids: List[int] = []
    mask: List[int] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prefix = render_messages(tokenizer, list(messages[:i]), add_generation_prompt=True)
        full = render_messages(tokenizer, list(messages[: i + 1]), add_generation_prompt=False)
        if prefix[: len(ids)] != ids or full[: len(prefix)] != prefix:
            raise ValueError("the chat template does not render conversation prefixes as token prefixes")
        mask += [0] * (len(prefix) - len(ids)) + [1] * (len(full) - len(prefix))
        ids = full
    if len(ids) == 0:
        raise ValueError("conversation has no assistant message to learn from")
    return ids, mask


def render_prompt(tokenizer, messages: Sequence[dict]) -> List[int]:
    """Token ids of a conversation ready for the assistant's next turn (generation prompt appended)."""
    return render_messages(tokenizer, list(messages), add_generation_prompt=True)
