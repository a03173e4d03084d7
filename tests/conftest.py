import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Nothing may download in tests: a Hub ID is resolved from a cache a test builds, never the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (the embedded model is converted once per machine)."""
    from transformers import AutoTokenizer

    from rlhf_cli.models.embedded import ensure_embedded_model

    return AutoTokenizer.from_pretrained(str(ensure_embedded_model()))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    """32 short prompts for the RL e2e tests (grpo, ppo)."""
    qs = ["Say hi.", "Name a color.", "Count to three.", "What is two plus two?", "Tell me a word.",
          "Describe the sky.", "Name an animal.", "Greet me."]
    p = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": qs[i % 8], "id": i}) + "\n" for i in range(32)))
    return p
