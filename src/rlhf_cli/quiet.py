"""Silence library noise (transformers / deepspeed INFO spam, progress bars) unless --debug."""
from __future__ import annotations

import os


def quiet_libraries(debug: bool) -> None:
    import logging
    import warnings

    if debug:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    for name in ("DeepSpeed", "deepspeed", "transformers", "torch.distributed", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
