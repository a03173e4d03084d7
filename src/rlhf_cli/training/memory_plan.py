"""The memory plan ``rlhf train STAGE ... --dry-run`` prints: per GPU, every model the stage holds (policy /
actor, reference, critic, reward models, judge) under the chosen ZeRO stage and offload (DeepSpeed's own
estimators, ``engine/memory.py``), the activations of one micro-batch, the rollout's KV cache, against the
GPU's memory; a plan that does not fit names the settings that would make it fit, each tried on the plan.

Sizes come from the models' configs alone (``models/param_count.py``: nothing is downloaded but
config.json). Precision "auto" plans for a GPU (bf16).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from rlhf_cli.engine.memory import (
    RUNTIME_RESERVE,
    GiB,
    activation_bytes,
    frozen_weights,
    kv_cache_bytes,
    trainable_model_states,
)
from rlhf_cli.errors import ConfigError


@dataclass
class Line:
    role: str
    params: int
    trainable: bool
    gpu: int
    cpu: int = 0
    note: str = ""


@dataclass
class Plan:
    lines: List[Line]
    activations: int
    kv_cache: int
    world: int
    nodes: int
    zero_stage: int
    precision: str
    gpu_mem: Optional[int]
    reserve: int = RUNTIME_RESERVE
    suggestions: List[Tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(x.gpu for x in self.lines) + self.activations + self.kv_cache + self.reserve

    @property
    def fits(self) -> Optional[bool]:
        return None if self.gpu_mem is None else self.total <= self.gpu_mem

    def text(self) -> str:
        gb = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
        per = f"{self.world // self.nodes} GPU(s) x {self.nodes} node(s)"
        head = (f"memory plan per GPU ({per}, ZeRO-{self.zero_stage}, {self.precision}"
                + (f"; GPU {gb(self.gpu_mem)})" if self.gpu_mem else "; no GPU here: pass --gpu-mem 80GiB)"))
        out = [head]
        for x in self.lines:
            kind = "trained" if x.trainable else "frozen"
            cpu = f"  (+{gb(x.cpu)} CPU per node, DeepSpeed's estimate)" if x.cpu else ""
            note = f"  {x.note}" if x.note else ""
            out.append(f"  {x.role:<22} {x.params / 1e9:7.2f}B {kind:<8} {gb(x.gpu):>10}{cpu}{note}")
        out += [f"  {'activations':<22} {'':17} {gb(self.activations):>10}  (one micro-batch, backward)",
                f"  {'rollout KV cache':<22} {'':17} {gb(self.kv_cache):>10}",
                f"  {'runtime reserve':<22} {'':17} {gb(self.reserve):>10}  (CUDA context, buffers)"]
        verdict = "" if self.fits is None else (": fits" if self.fits else ": does NOT fit")
        out.append(f"  total {gb(self.total)}" + (f" of {gb(self.gpu_mem)}" if self.gpu_mem else "") + verdict)
        if self.fits is False:
            if self.suggestions:
                out.append("  fits with: " + " | ".join(f"{s} ({gb(t)})" for s, t in self.suggestions))
            else:
                out.append("  no single setting makes it fit: more GPUs (--nproc / nodes), a smaller model, or "
                           "several of engine=zero3_offload, model.lora.r=16, train.micro_batch_size=1")
        return "\n".join(out)


def parse_size(text: str, key: str = "--gpu-mem") -> int:
    """'80GiB' / '80GB' / '81920MiB' / '80' (GiB) -> bytes; one-line ConfigError otherwise."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(GiB|GB|G|MiB|MB|M|TiB|TB)?\s*", str(text))
    if m is None:
        raise ConfigError(f"{key}={text}: a size like 80GiB, 24GB or 40960MiB")
    value, unit = float(m.group(1)), (m.group(2) or "GiB")
    mult = {"GiB": GiB, "G": GiB, "GB": 10 ** 9, "MiB": 1 << 20, "M": 1 << 20, "MB": 10 ** 6, "TiB": 1 << 40,
            "TB": 10 ** 12}[unit]
    return int(value * mult)


def detected_gpu_memory() -> Optional[int]:
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:
        pass
    return None


def _size(cfg, path=None, key="model.path", reward_head=False, lora=None, revision=None):
    from rlhf_cli.models.param_count import model_config, size_of_config

    config = model_config(cfg.model, path, key=key, revision=revision)
    r = lora.r if lora is not None and lora.r > 0 else 0
    return size_of_config(config, reward_head=reward_head, lora_r=r,
                          lora_targets=list(lora.target_modules) if r else ())


def _reward_model_paths(cfg) -> List[Tuple[str, bool]]:
    """(path, on the GPU) of every model reward and judge reward of the stage."""
    out = []
    for fn in cfg.get("reward", {}).get("functions", []) or []:
        if fn.get("name") in ("model", "judge") and fn.get("path"):
            paths = [fn["path"]] if isinstance(fn["path"], str) else list(fn["path"])  # an ensemble: a list
            for p in paths:
                out.append((str(p), str(fn.get("device", "auto")) != "cpu"))
    return out


def plan(cfg, world: int, nodes: int = 1, gpu_mem: Optional[int] = None, suggest: bool = True) -> Plan:
    """The memory plan of stage config ``cfg`` on ``world`` GPUs over ``nodes`` nodes."""
    stage, eng = cfg.stage, cfg.engine
    precision = "bf16" if cfg.precision == "auto" else cfg.precision
    nbytes = 4 if precision == "fp32" else 2
    per_node = max(1, world // nodes)
    z3 = eng.zero_stage == 3 and world > 1
    lora = cfg.model.lora

    def trained(role, size, optim_offload=eng.offload_optimizer):
        if size.lora_params:  # the base frozen, the adapters trained
            base_gpu, base_cpu = frozen_weights(size.params, size.largest_layer, nbytes, world if z3 else 1,
                                                offload=eng.offload_params and eng.zero_stage == 3)
            a_gpu, a_cpu = trainable_model_states(size.lora_params, size.lora_params, eng.zero_stage, per_node, nodes,
                                                  precision, optim_offload, False)
            return Line(role, size.params, True, base_gpu + a_gpu, base_cpu + a_cpu,
                        f"LoRA r={lora.r}: {size.lora_params / 1e6:.1f}M trained")
        gpu, cpu = trainable_model_states(size.params, size.largest_layer, eng.zero_stage, per_node, nodes, precision,
                                          optim_offload, eng.offload_params)
        return Line(role, size.params, True, gpu, cpu)

    def frozen(role, size, offload=False, note=""):
        gpu, cpu = frozen_weights(size.params, size.largest_layer, nbytes, world if z3 else 1, offload)
        return Line(role, size.params, False, gpu, cpu, note)

    lines: List[Line] = []
    policy = _size(cfg, reward_head=stage == "rm", lora=lora if stage != "rlaif" else None,
                   revision=cfg.model.get("revision"))
    role = {"ppo": "actor", "rm": "reward model", "rlaif": "policy (sampling)"}.get(stage, "policy")
    lines.append(frozen(role, policy) if stage == "rlaif" else trained(role, policy))
    has_ref = stage in ("ppo", "dpo") or (stage == "grpo" and cfg.grpo.kl_coef > 0)
    if stage == "dpo":
        from rlhf_cli.algos.preference import loss_spec

        has_ref = loss_spec(cfg.dpo.loss)["reference"]
    if has_ref:
        if lora.r > 0 and not cfg.ref.path:
            lines.append(Line("reference", policy.params, False, 0, 0, "= the policy with its adapter off"))
        elif stage == "dpo" and cfg.ref.precompute:
            lines.append(Line("reference", policy.params, False, 0, 0, "precomputed before training, then freed"))
        else:
            ref = _size(cfg, cfg.ref.path, "ref.path") if cfg.ref.path else policy
            lines.append(frozen("reference", ref, cfg.ref.offload, "in CPU memory (ref.offload)" if cfg.ref.offload
                                else ""))
    critic = None
    if stage == "ppo":
        from rlhf_cli.config.stage_ppo import critic_source

        source = critic_source(cfg)
        critic = _size(cfg, source, "critic.path", reward_head=True) if source else \
            _size(cfg, reward_head=True, revision=cfg.model.get("revision"))
        lines.append(trained("critic", critic))
    if stage == "rlaif" and cfg.judge.path:
        lines.append(frozen("judge", _size(cfg, cfg.judge.path, "judge.path")))
    for k, (path, on_gpu) in enumerate(_reward_model_paths(cfg)):
        size = _size(cfg, path, f"reward.functions (model {k})", reward_head=True)
        lines.append(frozen(f"reward model {k + 1}", size, offload=not on_gpu,
                            note="" if on_gpu else "device: cpu"))

    # activations of the largest backward (the actor's and the critic's come one after the other)
    mbs, length = cfg.train.micro_batch_size, cfg.data.max_length
    ckpt = bool(cfg.model.gradient_checkpointing)
    acts = 0
    if stage != "rlaif":
        seqs = 2 if stage in ("rm", "dpo") else 1
        tokens = mbs * seqs * length
        sec = cfg.get(stage) if stage in ("grpo", "ppo") else None
        logit_rows = 0 if stage == "rm" else (mbs * sec.max_new_tokens if sec is not None else tokens)
        acts = activation_bytes(tokens, policy.hidden, policy.layers, policy.vocab, nbytes, ckpt, logit_rows)
        if critic is not None:
            acts = max(acts, activation_bytes(tokens, critic.hidden, critic.layers, 0, nbytes, ckpt, 0))
    kv = 0
    if stage in ("grpo", "ppo", "rlaif"):
        sec = cfg[stage]
        if stage == "rlaif":  # a chunk's prompts, each with its responses, sampled at once
            rows = sec.generation_batch_size or sec.chunk_prompts * sec.num_responses
        else:
            rows = sec.generation_batch_size or sec.prompts_per_step * sec.num_generations
        kv = kv_cache_bytes(rows, length, policy.layers, policy.kv_heads, policy.head_dim, nbytes)
    out = Plan(lines, acts, kv, world, nodes, eng.zero_stage, precision, gpu_mem)
    if suggest and out.fits is False:
        out.suggestions = suggestions(cfg, world, nodes, gpu_mem)
    return out


# The settings tried, one at a time, on a plan that does not fit (the first that applies to the stage).
KNOBS = [("engine=zero3", {"engine.zero_stage": 3}),
         ("engine=zero3_offload", {"engine.zero_stage": 3, "engine.offload_optimizer": True,
                                   "engine.offload_params": True}),
         ("model.lora.r=16", {"model.lora.r": 16}),
         ("ref.offload=true", {"ref.offload": True}),
         ("model.gradient_checkpointing=true", {"model.gradient_checkpointing": True}),
         ("train.micro_batch_size=1", {"train.micro_batch_size": 1})]


def suggestions(cfg, world: int, nodes: int, gpu_mem: int) -> List[Tuple[str, int]]:
    """The single settings of KNOBS that make the plan fit, with the total they give."""
    from omegaconf import OmegaConf

    found = []
    for label, changes in KNOBS:
        alt = copy.deepcopy(cfg)
        OmegaConf.set_struct(alt, False)
        applies = True
        for key, value in changes.items():
            if OmegaConf.select(alt, key, default="__absent__") == "__absent__":
                applies = False
                break
            if OmegaConf.select(alt, key) == value:
                applies = False
                break
            OmegaConf.update(alt, key, value, merge=False)
        if not applies or (label == "model.lora.r=16" and cfg.stage in ("rm", "rlaif")):
            continue
        if label == "ref.offload=true" and not any(x.role == "reference" and x.gpu for x in plan(cfg, world, nodes,
                                                                                              gpu_mem, False).lines):
            continue
        alt_plan = plan(alt, world, nodes, gpu_mem, suggest=False)
        if alt_plan.fits:
            found.append((label, alt_plan.total))
    return found
