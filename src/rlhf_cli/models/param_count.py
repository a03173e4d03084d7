"""How big a model is, from its config alone (no weights read): parameters, the largest single layer (what
ZeRO-3 gathers at once), and the shapes activation and KV-cache memory depend on. The model is built on
the meta device (``accelerate.init_empty_weights``), so any architecture transformers knows is counted
exactly, a 70B as fast as a 135M."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


@dataclass
class ModelSize:
    params: int               # every parameter
    largest_layer: int        # parameters of the largest single module (own parameters only)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    lora_params: int = 0      # trainable adapter parameters when LoRA is on (0 = full fine-tuning)


def _get(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def size_of_config(config, reward_head: bool = False, lora_r: int = 0,
                   lora_targets: Sequence[str] = ()) -> ModelSize:
    """Count a transformers config's model on the meta device (a value head instead of the LM head when
    ``reward_head``); ``lora_r > 0``: also the adapter parameters on ``lora_targets`` (module-name suffixes,
    or 'all-linear')."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    with init_empty_weights():
        if reward_head:
            config.num_labels = 1
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    lora = 0
    if lora_r > 0:
        targets = set(lora_targets)
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and ("all-linear" in targets or name.rsplit(".", 1)[-1] in targets) \
                    and not name.endswith(("lm_head", "score")):
                lora += lora_r * (m.in_features + m.out_features)
    heads = _get(text, "num_attention_heads", default=1)
    hidden = _get(text, "hidden_size", "d_model", default=0)
    return ModelSize(params=params, largest_layer=largest, layers=_get(text, "num_hidden_layers", default=0),
                     hidden=hidden, heads=heads, kv_heads=_get(text, "num_key_value_heads", default=heads),
                     head_dim=_get(text, "head_dim", default=hidden // max(heads, 1)) or hidden // max(heads, 1),
                     vocab=_get(text, "vocab_size", default=0), intermediate=_get(text, "intermediate_size",
                                                                                  default=4 * hidden),
                     lora_params=lora)


def model_config(mcfg, path: Optional[str] = None, key: str = "model.path", revision: Optional[str] = None):
    """The transformers config of a model setting: ``path`` (a dir, run dir or Hub ID: config.json only is
    read or fetched), else the preset of ``mcfg`` (the embedded SmolLM2, or the tiny random Llama)."""
    from transformers import AutoConfig

    from rlhf_cli.hub import is_hub_id, model_config_file

    path = path if path is not None else mcfg.path
    if path:
        if is_hub_id(path) and not Path(path).exists():
            return AutoConfig.from_pretrained(str(model_config_file(path, key, revision).parent))
        from rlhf_cli.models.dir_check import resolve_model_dir

        return AutoConfig.from_pretrained(str(resolve_model_dir(path, key=key, revision=revision)))
    if mcfg.name == "tiny":
        from rlhf_cli.models.families import tiny_config

        class Vocab:  # the embedded tokenizer's size and special tokens, without loading it
            bos_token_id, eos_token_id, pad_token_id = 1, 2, 2

            def __len__(self):
                return 49152

        return tiny_config(mcfg.tiny, Vocab())
    from rlhf_cli.models.embedded import ensure_embedded_model

    return AutoConfig.from_pretrained(str(ensure_embedded_model()))
