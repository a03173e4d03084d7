"""Synthetic, learnable preference data for rm/dpo tests: the preferred answer always says 'great'."""
import json
from pathlib import Path

WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "forest", "candle", "rocket"]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pairs(n: int = 96):
    return [{"prompt": f"Tell me about the {WORDS[i % 10]} number {i}.",
             "chosen": f"The {WORDS[i % 10]} is great.", "rejected": f"The {WORDS[(i + 3) % 10]} is awful."}
            for i in range(n)]


def rankings(n: int = 96):
    return [{"prompt": f"Rate the {WORDS[i % 10]} {i}.",
             "responses": [f"It is great {i}.", f"It is fine {i}.", f"It is awful {i}."]} for i in range(n)]


def kto(n: int = 96):
    return [{"prompt": f"Tell me about the {WORDS[i % 10]} number {i}.",
             "completion": f"The {WORDS[i % 10]} is {'great' if i % 2 else 'awful'}.", "label": bool(i % 2)}
            for i in range(n)]
