"""GSM8K-style numeric answer extraction and the ``gsm8k`` correctness reward."""
from __future__ import annotations

import logging
import math
import re
from typing import Any, Callable, List, Optional, Sequence

from .errors import RewardError, dataset_field
from .registry import REWARDS

log = logging.getLogger(__name__)

# A number: optional minus (not a hyphen between words/digits), thousands-separated or
# plain digits, optional decimals, optional "/denominator"; or a bare ".5".
_NUM_RE = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?(?![\d])"
    r"|(?<![\w.])-?\.\d+"
)
_HASH_RE = re.compile(r"####")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")


def _clean(text: str) -> str:
    """Normalise a text before number search: unicode minus, LaTeX noise, currency."""
    text = text.replace("\u2212", "-").replace("\u2013", "-")
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\,", "")
    text = _TEXT_RE.sub(r" \1 ", text)
    text = _FRAC_RE.sub(r"\1/\2", text)
    text = text.replace("\\%", "%").replace("\\$", "$").replace("$", "")
    text = text.replace("**", " ")  # markdown bold: "**42**"
    return text


def _canonical(num: str) -> str:
    return num.replace(",", "")


def _first_number(text: str) -> Optional[str]:
    m = _NUM_RE.search(_clean(text))
    return _canonical(m.group(0)) if m else None


def _last_number(text: str) -> Optional[str]:
    matches = _NUM_RE.findall(_clean(text))
    return _canonical(matches[-1]) if matches else None


def _boxed_contents(text: str) -> List[str]:
    out = []
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out


def extract_answer(text: Optional[str], *, fallback_last_number: bool = True) -> Optional[str]:
    """Extract the final numeric answer from a model completion or a GSM8K solution.

    Priority: ``#### N`` (GSM8K), then the last ``\\boxed{N}``, then "the answer is N"
    (last occurrence), then (if ``fallback_last_number``) the last number in the text.
    Returns the number as a string without thousands separators, currency or percent
    signs (``"1234"``, ``"-3.5"``, ``"3/4"``), or ``None`` when nothing numeric is found.
    """
    if not text:
        return None
    text = str(text)
    # 1. "#### N" -- last marker, first number after it
    hashes = list(_HASH_RE.finditer(text))
    if hashes:
        num = _first_number(text[hashes[-1].end() :].split("\n", 1)[0])
        if num is not None:
            return num
    # 2. \boxed{...} -- the last one; "x = 5" -> the part after the last "="
    boxes = _boxed_contents(text)
    if boxes:
        content = _clean(boxes[-1])
        if "=" in content:
            content = content.rsplit("=", 1)[1]
        num = _first_number(content)
        if num is not None:
            return num
    # 3. "the answer is N" / "Answer: N" -- last occurrence, first number on that line
    answers = list(_ANSWER_IS_RE.finditer(text))
    if answers:
        num = _first_number(text[answers[-1].end() :].split("\n", 1)[0])
        if num is not None:
            return num
    # 4. last number anywhere
    return _last_number(text) if fallback_last_number else None


def normalize_number(s: Any) -> Optional[float]:
    """``"1,234"`` -> 1234.0, ``"$18.00"`` -> 18.0, ``"70%"`` -> 70.0, ``"3/4"`` -> 0.75,
    ``"\\frac{3}{4}"`` -> 0.75, ``"72 dollars"`` -> 72.0; ``None`` if no number."""
    if s is None or isinstance(s, bool):
        return None
    if isinstance(s, (int, float)):
        v = float(s)
        return v if math.isfinite(v) else None
    num = _first_number(str(s))
    if num is None:
        return None
    try:
        if "/" in num:
            a, b = num.split("/", 1)
            d = float(b)
            return None if d == 0 else float(a) / d
        return float(num)
    except ValueError:
        return None


def reference_value(ref: Any) -> Optional[float]:
    """Numeric value of a reference answer: a number, ``"72"``, or a raw GSM8K
    solution ending in ``#### 72``."""
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        return normalize_number(ref)
    if ref is None:
        return None
    return normalize_number(extract_answer(str(ref)))


@REWARDS.register("gsm8k")
def make_gsm8k_reward(
    *,
    answer_field: str = "answer",
    tolerance: float = 1e-6,
    fallback_last_number: bool = True,
) -> Callable[..., List[float]]:
    """1.0 if the completion's extracted answer equals the reference numerically, else 0.0."""
    if not isinstance(answer_field, str) or not answer_field:
        raise RewardError(f"gsm8k: answer_field must be a non-empty string, got {answer_field!r}")
    tolerance = float(tolerance)
    if not tolerance >= 0:
        raise RewardError(f"gsm8k: tolerance must be >= 0, got {tolerance!r}")
    warned = []

    def gsm8k_reward(prompts: Sequence[str], completions: Sequence[str], **fields: Any) -> List[float]:
        refs = dataset_field(fields, answer_field, "gsm8k", "answer_field")
        scores = []
        for comp, ref in zip(completions, refs):
            r = reference_value(ref)
            if r is None:
                if not warned:
                    log.warning("gsm8k: unparseable reference answer %r (scored 0)", str(ref)[:80])
                    warned.append(True)
                scores.append(0.0)
                continue
            p = normalize_number(extract_answer(comp, fallback_last_number=fallback_last_number))
            scores.append(1.0 if p is not None and abs(p - r) <= tolerance else 0.0)
        return scores

    return gsm8k_reward


make_gsm8k_reward.pure = True  # only checks its options: config-time validation may call it
