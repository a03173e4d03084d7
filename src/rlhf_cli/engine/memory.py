"""Per-GPU memory of a model under a ZeRO stage, in bytes: DeepSpeed's own estimators where it has them
(``estimate_zero2_model_states_mem_needs`` for stages 1-2, ``estimate_zero3_model_states_mem_needs`` for
stage 3), the same accounting written out where it has none (stage 0, fp32), and the activation and KV-cache
terms a plan adds on top. Pure arithmetic on counts: nothing is loaded.

Model states of a trainable model in mixed precision (16-bit weights and gradients, fp32 master weights and
Adam moments: 2 + 2 + 4 + 8 = 16 bytes a parameter, DeepSpeed's 2 + 18/N for ZeRO-2 and 4 x largest layer +
18/N for ZeRO-3); in fp32, 4 + 4 + 8 = 16 bytes with no separate master copy.
"""
from __future__ import annotations

from typing import Tuple

GiB = 1 << 30
# CUDA context, allocator fragmentation and communication buffers: held back from every GPU's budget.
RUNTIME_RESERVE = 2 * GiB


def trainable_model_states(params: int, largest_layer: int, zero_stage: int, gpus_per_node: int, nodes: int = 1,
                           precision: str = "bf16", offload_optimizer: bool = False,
                           offload_params: bool = False) -> Tuple[int, int]:
    """(GPU bytes per GPU, CPU bytes per node) of a trainable model's weights, gradients and Adam state."""
    world = gpus_per_node * nodes
    if precision == "fp32":  # weights 4 + gradients 4 + Adam moments 8; nothing 16-bit, no master copy
        gpu = {0: 16 * params, 1: 8 * params + 8 * params // world, 2: 4 * params + 12 * params // world,
               3: 4 * largest_layer + 16 * params // world}[zero_stage]
        cpu = 0
        if offload_optimizer and zero_stage >= 1:
            moved = 8 * params // world if zero_stage < 3 else 12 * params // world
            gpu, cpu = gpu - moved, moved * gpus_per_node
        if offload_params and zero_stage == 3:
            gpu, cpu = 4 * largest_layer, cpu + 4 * params // nodes
        return int(gpu), int(cpu)
    from rlhf_cli.engine.ds_import import import_deepspeed

    import_deepspeed()
    if zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            params, largest_layer, num_gpus_per_node=gpus_per_node, num_nodes=nodes, cpu_offload=offload_optimizer,
            cpu_offload_params=offload_params and offload_optimizer, zero_init=True)
        return int(gpu), int(cpu)
    if zero_stage in (1, 2):
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=gpus_per_node, num_nodes=nodes,
                                                         cpu_offload=offload_optimizer)
        if zero_stage == 1:  # ZeRO-1 keeps the 16-bit gradients whole on every GPU: + 2 bytes x (1 - 1/N)
            gpu += 2 * params - 2 * params // world
        return int(gpu), int(cpu)
    return 16 * params, 0  # stage 0: 2 + 2 + 12 bytes, replicated


def frozen_weights(params: int, largest_layer: int, bytes_per_param: int, sharded_over: int = 1,
                   offload: bool = False) -> Tuple[int, int]:
    """(GPU, CPU) bytes of a model only run forward: its weights, sharded over ``sharded_over`` GPUs under
    ZeRO-3 (plus the largest layer gathered at a time), or in CPU memory (fp32) with ``offload``."""
    if offload:
        return 0, 4 * params
    if sharded_over > 1:
        return int(bytes_per_param * (params // sharded_over + largest_layer)), 0
    return int(bytes_per_param * params), 0


def activation_bytes(tokens: int, hidden: int, layers: int, vocab: int, bytes_per_value: int,
                     checkpointing: bool, logit_rows: int, chunk: int = 1024) -> int:
    """Activations kept for backward over ``tokens`` tokens of one micro-batch (Korthikanti et al. 2022,
    "Reducing Activation Recomputation in Large Transformer Models", eq. 2 with a fused/flash attention
    kernel, whose s^2 score term is not stored: 34 s b h bytes a layer in 16-bit), ``2 s b h`` a layer
    (its input) plus one layer's full set with activation checkpointing; plus the logits of the
    ``logit_rows`` positions that carry a loss and one fp32 log-softmax chunk."""
    scale = bytes_per_value / 2
    per_layer = 34 * tokens * hidden * scale
    body = (2 * tokens * hidden * scale * layers + per_layer) if checkpointing else per_layer * layers
    logits = logit_rows * vocab * bytes_per_value + min(logit_rows, chunk) * vocab * 4
    return int(body + logits)


def kv_cache_bytes(rows: int, length: int, layers: int, kv_heads: int, head_dim: int, bytes_per_value: int) -> int:
    """The rollout's KV cache: keys and values of every layer for ``rows`` sequences of ``length`` tokens."""
    return int(2 * layers * kv_heads * head_dim * bytes_per_value * rows * length)
