import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (the embedded model is converted once per machine)."""
    from transformers import AutoTokenizer

    from rlhf_cli.models.embedded import ensure_embedded_model

    return AutoTokenizer.from_pretrained(str(ensure_embedded_model()))
