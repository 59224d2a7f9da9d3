"""The paper's efficiency techniques (Sec. 2.4), applied to an unchanged model.py on torch.distributed.

Order, as torchtitan applies them: tensor + sequence parallelism (DTensor plans on a `tp` sub-mesh),
activation checkpointing, torch.compile per block, then FSDP2 (`fully_shard`) on the `dp_shard`
sub-mesh, per block and at the root. A model that is not sharded is compiled whole, with its loss.

- Tensor parallel (Megatron; Korthikanti et al. 2022 for the sequence part): wq/wk/wv and the SwiGLU
  gate/up projections split by output rows (column-wise), wo and the down projection by input columns
  (row-wise), so each rank holds n_heads/tp query heads and n_kv_heads/tp key/value heads and one
  all-gather / reduce-scatter pair per sub-layer suffices. Between sub-layers the activations stay
  sharded along the sequence, where RMSNorm and the residual adds run on 1/tp of the tokens.
- Activation checkpointing: `full` recomputes each block in the backward; `selective` keeps the outputs
  of the matmuls and attention (the expensive activations) and recomputes the cheap element-wise ops,
  as the paper did with its hand-written backward.
- FSDP2: parameters, gradients and optimizer state sharded over the data-parallel ranks; on GPU the
  bf16-params / fp32-reduce policy; the next block's all-gather is prefetched while this one computes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from llamafoundry.config import ModelConfig, num_params
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer
from llamafoundry.train.distributed import Runtime, is_rank0
from llamafoundry.train.loss import lm_loss
from llamafoundry.train.recipe import ParallelSection


@dataclass(frozen=True)
class Layout:
    """How the world is split: this rank's data-parallel coordinates and the tensor-parallel degree."""

    dp_rank: int
    dp_size: int
    tp: int
    mesh: DeviceMesh | None


def plan_layout(pcfg: ParallelSection, cfg: ModelConfig, runtime: Runtime) -> Layout:
    """The (dp_shard x tp) mesh for this world; a UserError when the sizes cannot work."""
    world, tp = runtime.world_size, pcfg.tp
    if tp > 1 and cfg.tie_embeddings:
        raise UserError(
            "parallel.tp > 1 is not supported for a model with tied embeddings (model.tie_embeddings): "
            "the embedding and output layers shard one table differently; use parallel.tp 1 (FSDP)"
        )
    dp = world // tp if pcfg.dp_shard in (-1, 0) else pcfg.dp_shard
    if dp * tp != world:
        raise UserError(f"parallel.dp_shard {dp} x parallel.tp {tp} must equal the {world} ranks of this job")
    if cfg.n_heads % tp or cfg.kv_heads % tp:
        raise UserError(f"parallel.tp {tp} must divide n_heads {cfg.n_heads} and n_kv_heads {cfg.kv_heads}")
    if not runtime.distributed:
        return Layout(0, 1, 1, None)
    mesh = init_device_mesh(runtime.device.type, (dp, tp), mesh_dim_names=("dp_shard", "tp"))
    return Layout(mesh["dp_shard"].get_local_rank(), dp, tp, mesh)


def build_parallel_model(
    cfg: ModelConfig,
    pcfg: ParallelSection,
    runtime: Runtime,
    precision: torch.dtype,
    layout: Layout,
    adapt: Callable[[nn.Module], object] | None = None,
) -> nn.Module:
    """The model initialised from the current torch seed and parallelised for `layout`; `adapt` changes
    the plain model first (LoRA adds its adapters: they must be in place before sharding).

    Models whose fp32 weights fit comfortably in host memory are initialised whole on every rank (so a
    run is the same on any number of ranks); larger ones are built on the meta device and initialised
    shard by shard after parallelising, never whole.
    """
    whole = num_params(cfg) * 4 < 0.25 * _host_memory_bytes()
    if whole:
        model = Transformer(cfg)
    else:
        with torch.device("meta"):
            model = Transformer(cfg)
    if adapt is not None:
        adapt(model)
    if layout.tp > 1:
        apply_tensor_parallel(model, layout.mesh["tp"])
    apply_activation_checkpointing(model, pcfg.activation_checkpoint)
    if layout.mesh is not None and compile_enabled(pcfg.compile, runtime.device):
        for block in model.layers:  # per block, so FSDP's hooks stay between compiled graphs
            block.compile()
    if layout.mesh is not None:
        apply_fsdp(model, layout.mesh["dp_shard"], runtime.device, precision)
    if whole:
        model.to(runtime.device)
    else:
        model.to_empty(device=runtime.device)
        with torch.no_grad():
            model.init_weights()
    model.reset_rope()
    return model


def apply_tensor_parallel(model: Transformer, tp_mesh: DeviceMesh) -> None:
    """Megatron-style tensor parallelism with sequence parallelism between the sub-layers."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    parallelize_module(
        model,
        tp_mesh,
        {
            "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
            "norm": SequenceParallel(),
            "output": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
        },
    )
    # Attention and feed-forward take (x, rope cos, rope sin, cache positions, mask): only x is sharded.
    attention_input = PrepareModuleInput(
        input_layouts=(Shard(1), None, None, None, None),
        desired_input_layouts=(Replicate(), None, None, None, None),
    )
    for block in model.layers:
        parallelize_module(
            block,
            tp_mesh,
            {
                "attention_norm": SequenceParallel(),
                "attention": attention_input,
                "attention.wq": ColwiseParallel(),
                "attention.wk": ColwiseParallel(),
                "attention.wv": ColwiseParallel(),
                "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
                "ffn_norm": SequenceParallel(),
                "feed_forward": PrepareModuleInput(
                    input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)
                ),
                "feed_forward.w1": ColwiseParallel(),
                "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
                "feed_forward.w3": ColwiseParallel(),
            },
        )


# Ops whose outputs selective checkpointing keeps: the matmuls and attention (Sec. 2.4: "the
# activations that are expensive to compute, such as the outputs of linear layers").
_SAVE_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def _selective_policy(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def apply_activation_checkpointing(model: Transformer, mode: str) -> None:
    """Wrap each block: 'full' recomputes all of it, 'selective' only its element-wise ops."""
    if mode == "none":
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    kwargs = {"preserve_rng_state": False}  # no dropout in LLaMA: nothing random to replay
    if mode == "selective":
        kwargs["context_fn"] = partial(create_selective_checkpoint_contexts, _selective_policy)
    for i, block in enumerate(model.layers):
        model.layers[i] = checkpoint_wrapper(block, **kwargs)


# parallel.compile "auto" on CPU: the eager run time from which compiling the step pays for itself.
# Measured here (2 cores, fp32 unless said, `benchmarks/train_throughput.py` and one-process A/B runs):
# compiling took 28 s (dim 256, 4 layers) to 83 s (llama-15m's shape) cold, and made steps 1.03x to
# 1.24x faster (the benchmark's dim-512 shape: 1.38x in bf16); a 20-minute run repays even the slowest.
COMPILE_AFTER_S = 20 * 60


def compile_enabled(mode: str, device: torch.device, eager_seconds: float | None = None) -> bool:
    """'true'/'false' force it; 'auto' compiles on CUDA, and on CPU when the run's steps would take
    `eager_seconds` >= COMPILE_AFTER_S eager (None: not known, so eager)."""
    if mode != "auto":
        return mode == "true"
    return device.type == "cuda" or (eager_seconds is not None and eager_seconds >= COMPILE_AFTER_S)


def training_loss(
    pcfg: ParallelSection, layout: Layout, device: torch.device, eager_seconds: float | None = None
) -> Callable:
    """`lm_loss`, compiled as one graph when the model is not sharded and `compile_enabled` says so.

    One graph lets inductor fuse the cross-entropy's element-wise passes over the [tokens x vocab]
    logits with the output layer (on CPU those passes cost as much as the output matmul itself): the
    compiled loss beat the eager chunked `linear_cross_entropy`, and so did it the model compiled
    without its loss (fp32 1.44x HF against 1.19x eager and 1.26x; bf16 1.38x against 0.99x and 1.11x,
    one interleaved run of the benchmark's shape). Sharded models are compiled per block instead (see
    build_parallel_model).
    """
    if layout.mesh is None and compile_enabled(pcfg.compile, device, eager_seconds):
        return torch.compile(lm_loss)
    return lm_loss


def apply_fsdp(model: Transformer, dp_mesh: DeviceMesh, device: torch.device, precision: torch.dtype) -> None:
    """FSDP2 per block and at the root; bf16 compute with fp32 gradient reduction on GPU."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if device.type == "cuda" and precision == torch.bfloat16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    blocks = list(model.layers)
    for i, block in enumerate(blocks):
        # The last block's parameters are needed again at once by the backward: keep them gathered.
        fully_shard(block, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mesh=dp_mesh, mp_policy=policy)
    # Issue the next block's all-gather before this block computes (and the reverse in the backward).
    for current, following in zip(blocks, blocks[1:], strict=False):
        current.set_modules_to_forward_prefetch([following])
        following.set_modules_to_backward_prefetch([current])


def attention_backend(name: str, device: torch.device) -> AbstractContextManager:
    """Restrict scaled_dot_product_attention to the chosen CUDA kernels (flash, then memory-efficient)."""
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "auto": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION],
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "math": [SDPBackend.MATH],
    }[name]
    return sdpa_kernel(backends)


def gather_model(model: nn.Module, cfg: ModelConfig) -> Transformer | None:
    """A plain Transformer with the full weights on CPU (on rank 0; None on other ranks). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from llamafoundry.checkpoint.common import build_model

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    if not is_rank0():
        return None
    # build_model ties a tied model's table to its output again (a state dict holds it twice).
    return build_model(cfg, {k: v.detach().clone() for k, v in state.items()}, "the trained model").eval()


def load_weights(model: nn.Module, cfg: ModelConfig, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy a full (unsharded) state dict into a model parallelised for any layout: gather_model's
    inverse. Names and shapes are checked first; a UserError (naming `where`) says which tensor differs."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from llamafoundry.checkpoint.common import build_model

    if (
        getattr(model, "lora", None) is not None
    ):  # adapted names (base_layer, lora_A/B): set_model_state_dict checks them
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
        return
    plain = build_model(cfg, state, where)  # meta-device model holding `state` as is: no copy
    set_model_state_dict(model, plain.state_dict(), options=StateDictOptions(full_state_dict=True))


def _host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
