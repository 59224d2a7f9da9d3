"""LoRA (Hu et al., 2021) for instruction finetuning: low-rank adapters beside frozen linear layers.

LLaMA-I (Sec. 4) finetunes all weights; LoRA is the cheap alternative every peer offers. Each adapted
linear layer W computes W x + (alpha / rank) * B A x with A [rank, in] and B [out, rank]; B starts at zero,
so a fresh adapter changes nothing, and only A and B train.

The adapters are the `peft` library's own: `peft.inject_adapter_in_model` wraps any `nn.Linear` child
of any module, and our attention and feed-forward projections (wq, wk, wv, wo, w1, w2, w3) and the
output head are plain `nn.Linear`s, so no LoRA module of ours is needed. peft is imported only when
adapters are added (the `finetune` extra). Wrapping renames a base weight `X.weight` to
`X.base_layer.weight`; `merge_lora` folds the adapters back into a plain Transformer with our names.

Default targets: every linear layer of the blocks. QLoRA (Dettmers et al., 2023, Sec. 4) found that
LoRA matches full finetuning only when it adapts all linear transformer-block layers, not the query and
value projections alone (Hu et al.'s choice); rank 8, alpha 16 and dropout 0.05 are litgpt's defaults
(QLoRA: rank hardly matters once all layers are adapted).

Saved adapters are in Hugging Face PEFT's format (adapter_config.json + adapter_model.safetensors, HF
module names, wq/wk rows permuted as for an HF export), so `PeftModel.from_pretrained` applies them to
the HF export of the base model, and `load_adapters` reads adapters trained with HF PEFT on a Llama.

FSDP2: add the adapters to a plain model that already holds its base weights, then wrap it (`fully_shard`
per block, then the root), so each block's frozen weights and adapters shard together; `add_lora` refuses
a sharded model. `Transformer.init_weights` must not run after `add_lora` (it would randomise B and the
renamed base weights). Tensor parallelism does not fit: ColwiseParallel takes only `nn.Linear`, and
peft's wrapper now stands where wq is (`apply_tensor_parallel` raises NotImplementedError). On a sharded
model every rank calls `adapter_state_dict` (each adapter is gathered whole; they are small) and rank 0
passes the result to `save_adapters(..., adapters=...)`; a merged model comes from the full state dict
(`get_model_state_dict` with `full_state_dict=True`) through `merged_state_dict` on rank 0.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.distributed.tensor import DTensor

from llamafoundry import fileio
from llamafoundry.checkpoint.common import build_model, merge_adapters, read_safetensors
from llamafoundry.checkpoint.hf import from_hf, to_hf
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.fileio import read_json
from llamafoundry.model import Transformer

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
# peft's adapter name inside the model, and the prefix of every tensor name in a PEFT adapter file.
_ADAPTER, _PEFT_PREFIX = "default", "base_model.model."
# PEFT options that change what the adapters compute; a file using any of them is not one we can apply.
_UNSUPPORTED = (
    "use_dora",
    "use_rslora",
    "fan_in_fan_out",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
)


@dataclass(frozen=True)
class LoraConfig:
    """Which linear layers get adapters (`targets`: names of the model's linear layers, matched in every
    block) and their rank, scale (`alpha` / `rank`) and dropout (on the adapter's input, training only)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")

    def __post_init__(self) -> None:
        if isinstance(self.targets, list):  # from TOML or JSON
            object.__setattr__(self, "targets", tuple(self.targets))
        if type(self.alpha) is int:
            object.__setattr__(self, "alpha", float(self.alpha))
        problem = self._problem()
        if problem:
            raise UserError(f"invalid LoRA config: {problem}")

    def _problem(self) -> str | None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank <= 0:
            return f"rank must be a positive integer, got {self.rank!r}"
        if not isinstance(self.alpha, float) or not math.isfinite(self.alpha) or self.alpha <= 0:
            return f"alpha must be a finite number > 0, got {self.alpha!r}"
        if not isinstance(self.dropout, int | float) or isinstance(self.dropout, bool):
            return f"dropout must be a number in [0, 1), got {self.dropout!r}"
        if not 0 <= self.dropout < 1:
            return f"dropout must be in [0, 1), got {self.dropout!r}"
        if not isinstance(self.targets, tuple) or not self.targets:
            return f"targets must be a non-empty list of linear layer names, got {self.targets!r}"
        if not all(isinstance(t, str) and t for t in self.targets):
            return f"targets must be names of linear layers (strings), got {list(self.targets)!r}"
        if len(set(self.targets)) != len(self.targets):
            return f"targets name a layer twice: {list(self.targets)!r}"
        return None

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def linear_names(model: nn.Module) -> list[str]:
    """The names LoRA targets can use: the distinct last names of the model's `nn.Linear` layers."""
    names = [name.rpartition(".")[2] for name, m in model.named_modules() if type(m) is nn.Linear]
    return list(dict.fromkeys(names))


def add_lora(model: Transformer, cfg: LoraConfig) -> Transformer:
    """Wrap the `cfg.targets` linear layers of `model` (in place) with fresh adapters and freeze all else.

    Afterwards only the adapters' A and B matrices have `requires_grad`; the model computes what it did
    before until B is trained. `model.lora` holds `cfg`. A target the model lacks is a UserError listing
    the names it has, with the model untouched.
    """
    _check_plain(model)
    available = linear_names(model)
    unknown = [t for t in cfg.targets if t not in available]
    if unknown:
        raise UserError(
            f"LoRA target {', '.join(map(repr, unknown))} is not a linear layer of this model; "
            f"its linear layers are {', '.join(available)}"
        )
    if "output" in cfg.targets and model.cfg.tie_embeddings:
        # Merged, the adapter would change the output projection alone: no longer the embedding table.
        raise UserError(
            "LoRA target 'output' is the embedding table of this tied model (tie_embeddings); "
            "leave it out of lora.targets"
        )
    peft = _peft()
    settings = peft.LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets)
    )
    training = model.training
    peft.inject_adapter_in_model(settings, model, adapter_name=_ADAPTER)  # freezes all but the adapters
    model.train(training)  # the new modules start in training mode: an eval model would drop out
    model.lora = cfg
    return model


def _check_plain(model: nn.Module) -> None:
    """Adapters go on a plain, unsharded, floating-point model without adapters."""
    if getattr(model, "lora", None) is not None:
        raise UserError("the model already has LoRA adapters; merge them (merge_lora) or start from the base")
    if getattr(model, "quantization", None) is not None:
        raise UserError("LoRA needs a floating-point model; load the model without quantizing it")
    if any(isinstance(p, DTensor) for p in model.parameters()):
        raise ValueError("add LoRA adapters before sharding the model (fully_shard, tensor parallel)")


def _peft():
    try:
        import peft
    except ImportError:
        raise UserError("LoRA needs the peft library: pip install 'llamafoundry[finetune]'") from None
    return peft


def _is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors, named `<linear layer>.lora_A.weight` / `.lora_B.weight` (our module names).

    On a sharded model every rank must call this: each adapter is gathered whole onto every rank.
    """
    state = {}
    for name, tensor in model.state_dict().items():
        if _is_adapter(name):
            if isinstance(tensor, DTensor):
                tensor = tensor.full_tensor()
            state[name.replace(f".{_ADAPTER}.", ".")] = tensor.detach().cpu()
    return state


def merged_state_dict(state: dict[str, torch.Tensor], cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """A LoRA model's full state dict with each adapter folded into its weight: W + (alpha / rank) B A,
    computed in float32 and stored in W's dtype. The names are the plain model's."""
    return merge_adapters(state, cfg.scaling)


def merge_lora(model: Transformer) -> Transformer:
    """A plain Transformer whose weights have the adapters of `model` (unsharded) folded in: the logits of
    base + adapters, with no adapter left to compute. `model` itself is unchanged; weights the adapters did
    not touch are shared with it, not copied."""
    if getattr(model, "lora", None) is None:
        raise ValueError("merge_lora needs a model with LoRA adapters (add_lora or load_adapters)")
    state = merged_state_dict(model.state_dict(), model.lora)
    return build_model(model.cfg, state, "the merged LoRA model").train(model.training)


def save_adapters(
    folder: str | os.PathLike,
    model: nn.Module,
    *,
    adapters: dict[str, torch.Tensor] | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the adapters of `model` alone as a PEFT adapter folder, atomically.

    `adapters`: the result of `adapter_state_dict` when the model is sharded (rank 0 saves; the model then
    supplies only its configs). `base_model` is recorded as PEFT's `base_model_name_or_path`. An existing
    folder is replaced only with `overwrite`, and only one we wrote (`fileio.atomic_dir`).
    """
    cfg: LoraConfig | None = getattr(model, "lora", None)
    if cfg is None:
        raise ValueError("save_adapters needs a model with LoRA adapters (add_lora or load_adapters)")
    tensors = _to_peft(adapter_state_dict(model) if adapters is None else adapters, model.cfg)
    hf_targets = sorted({name.split(".")[-3] for name in tensors})
    settings = _peft().LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=hf_targets,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )
    with fileio.atomic_dir(folder, kind="llamafoundry LoRA adapters", overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        settings.save_pretrained(str(tmp))
    return Path(folder)


def _to_peft(adapters: dict[str, torch.Tensor], model_cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our adapter names -> PEFT's names on an HF LlamaForCausalLM. B's rows are the layer's output rows,
    so wq's and wk's are permuted as the HF export permutes those weights; A is only renamed."""
    out = {}
    for name, a in adapters.items():
        if ".lora_A." not in name:
            continue
        layer = name.removesuffix(".lora_A.weight")
        b = adapters[f"{layer}.lora_B.weight"]
        ((hf_weight, hf_b),) = to_hf({f"{layer}.weight": b}, model_cfg).items()
        hf_layer = _PEFT_PREFIX + hf_weight.removesuffix(".weight")
        out[f"{hf_layer}.lora_A.weight"] = a.contiguous()
        out[f"{hf_layer}.lora_B.weight"] = hf_b.contiguous()
    return out


def load_adapters(folder: str | os.PathLike, model: Transformer) -> Transformer:
    """Add the adapters saved in a PEFT adapter folder (ours, or HF PEFT's for a Llama) to `model`, in
    place, and return it. A folder that is not one, or adapters of another model's shape, is a UserError
    with the model untouched."""
    folder = Path(folder)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(
            f"{folder} is not a LoRA adapter folder: expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
        )
    _check_plain(model)
    adapters = _from_peft(read_safetensors(weights_path), model.cfg, weights_path)
    cfg = _lora_config(read_json(config_path), adapters, linear_names(model), config_path)
    _check_fit(model, cfg, adapters, weights_path)
    add_lora(model, cfg)
    peft_names = {name.replace(".weight", f".{_ADAPTER}.weight"): t for name, t in adapters.items()}
    model.load_state_dict(peft_names, strict=False)  # the base weights are the model's own
    return model


def _from_peft(
    tensors: dict[str, torch.Tensor], model_cfg: ModelConfig, where: Path
) -> dict[str, torch.Tensor]:
    """PEFT's names on an HF Llama -> our adapter names, undoing `_to_peft`'s permutation of B."""
    out = {}
    for name in sorted(tensors):
        layer = name.removesuffix(".lora_A.weight").removesuffix(".lora_B.weight")
        a, b = tensors.get(f"{layer}.lora_A.weight"), tensors.get(f"{layer}.lora_B.weight")
        if a is None or b is None or not layer.startswith(_PEFT_PREFIX):
            raise UserError(
                f"{where}: {name} is not part of a Llama LoRA adapter (a lora_A and lora_B weight)"
            )
        try:
            ((ours, b),) = from_hf({layer.removeprefix(_PEFT_PREFIX) + ".weight": b}, model_cfg).items()
        except (RuntimeError, ValueError):  # B is no matrix whose rows are wq's or wk's heads
            raise UserError(
                f"{where}: {layer} has shape {tuple(b.shape)}, which does not fit the model"
            ) from None
        ours = ours.removesuffix(".weight")
        out[f"{ours}.lora_A.weight"], out[f"{ours}.lora_B.weight"] = a, b
    return out


def _lora_config(
    values: dict, adapters: dict[str, torch.Tensor], order: list[str], where: Path
) -> LoraConfig:
    """The LoraConfig an adapter file was trained with; its targets are the layers it holds tensors for,
    in the model's `order`."""
    if values.get("peft_type") != "LORA":
        raise UserError(f"{where}: peft_type is {values.get('peft_type')!r}; only LoRA adapters load here")
    used = [option for option in _UNSUPPORTED if values.get(option)]
    if used:
        raise UserError(
            f"{where}: PEFT options {', '.join(used)} are not supported; train plain LoRA adapters"
        )
    targets = {
        name.removesuffix(".lora_A.weight").rpartition(".")[2] for name in adapters if ".lora_A." in name
    }
    try:
        return LoraConfig(
            rank=values.get("r"),
            alpha=values.get("lora_alpha"),
            dropout=values.get("lora_dropout", 0.0),
            targets=tuple(t for t in order if t in targets) + tuple(sorted(targets - set(order))),
        )
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _check_fit(model: Transformer, cfg: LoraConfig, adapters: dict[str, torch.Tensor], where: Path) -> None:
    """A UserError unless `adapters` are exactly the tensors `add_lora(model, cfg)` creates, shape for shape."""
    expected = {}
    for name, module in model.named_modules():
        if type(module) is nn.Linear and name.rpartition(".")[2] in cfg.targets:
            expected[f"{name}.lora_A.weight"] = (cfg.rank, module.in_features)
            expected[f"{name}.lora_B.weight"] = (module.out_features, cfg.rank)
    missing, unexpected = sorted(set(expected) - set(adapters)), sorted(set(adapters) - set(expected))
    if missing or unexpected:
        kind, names = ("missing", missing) if missing else ("unexpected", unexpected)
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        problem = f"{kind} {names[0]}{more}"
        raise UserError(f"{where}: the adapters do not fit the model ({problem})")
    for name, shape in expected.items():
        if tuple(adapters[name].shape) != shape:
            raise UserError(
                f"{where}: {name} has shape {tuple(adapters[name].shape)}, but the model needs {shape}"
            )
