"""Run under torchrun: LoRA adapters added before FSDP2 train as on one process, and save and merge whole.

Each rank takes half of a batch that an unsharded copy of the model takes whole; after two AdamW steps
rank 0 writes to the JSON file argv[1] the largest differences (adapters, merged logits, reloaded
logits) and whether any frozen weight moved. argv[2] is a folder the adapters are saved into.
"""

import copy
import json
import sys

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh

from llamafoundry.checkpoint.common import build_model
from llamafoundry.config import ModelConfig
from llamafoundry.finetune.lora import (
    LoraConfig,
    adapter_state_dict,
    add_lora,
    load_adapters,
    merge_lora,
    merged_state_dict,
    save_adapters,
)
from llamafoundry.model import Transformer
from llamafoundry.train.distributed import init_runtime, is_rank0, shutdown
from llamafoundry.train.loss import lm_loss
from llamafoundry.train.optim import OptimConfig, build_optimizer
from llamafoundry.train.parallel import apply_fsdp


def main() -> None:
    runtime = init_runtime()
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=96, multiple_of=32, max_seq_len=32)
    torch.manual_seed(0)
    base = Transformer(cfg)
    reference = add_lora(copy.deepcopy(base), LoraConfig(rank=4, dropout=0.0))
    sharded = copy.deepcopy(reference)  # the same adapters on every rank, as a seeded init gives
    apply_fsdp(sharded, init_device_mesh("cpu", (runtime.world_size,)), runtime.device, torch.float32)
    batch = torch.randint(0, cfg.vocab_size, (4, 17), generator=torch.Generator().manual_seed(1))
    rank, half = torch.distributed.get_rank(), batch.shape[0] // runtime.world_size
    optimizers = [build_optimizer(m, OptimConfig(lr=1e-2)) for m in (reference, sharded)]
    for _ in range(2):
        lm_loss(reference, batch).backward()
        lm_loss(sharded, batch[rank * half : (rank + 1) * half]).backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    adapters = adapter_state_dict(sharded)  # collective: every rank
    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_rank0():
        report(base, reference, sharded, adapters, full, sys.argv[2])
    shutdown(runtime)


def report(base, reference, sharded, adapters, full, folder) -> None:
    expected = adapter_state_dict(reference)
    trained = max((adapters[name] - t).abs().max().item() for name, t in expected.items())
    frozen_moved = [
        name for name, t in base.state_dict().items() if not torch.equal(full[_wrapped(name, full)], t)
    ]
    merged = build_model(base.cfg, merged_state_dict(full, sharded.lora), "merged").eval()
    tokens = torch.randint(0, base.cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    save_adapters(folder, sharded, adapters=adapters)
    reloaded = load_adapters(folder, copy.deepcopy(base)).eval()
    with torch.no_grad():
        want = reference.eval()(tokens)
        diffs = {
            "adapters": trained,
            "merged_logits": (merged(tokens) - merge_lora(reference)(tokens)).abs().max().item(),
            "reloaded_logits": (reloaded(tokens) - want).abs().max().item(),
        }
    with open(sys.argv[1], "w") as f:
        json.dump({**diffs, "frozen_moved": frozen_moved}, f)


def _wrapped(name: str, state: dict) -> str:
    """A base weight's name in the LoRA model's state dict (peft moves it under base_layer)."""
    layer, _, leaf = name.rpartition(".")
    return name if name in state else f"{layer}.base_layer.{leaf}"


if __name__ == "__main__":
    main()
