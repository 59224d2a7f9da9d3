"""Run under torchrun: tensor + sequence parallel logits and gradients equal the unsharded model's.

Writes the largest differences to the JSON file given as argv[1] (rank 0).
"""

import json
import sys

import torch
import torch.distributed as dist

from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer
from llamafoundry.train.distributed import init_runtime, shutdown
from llamafoundry.train.loss import lm_loss
from llamafoundry.train.parallel import apply_tensor_parallel


def main() -> None:
    runtime = init_runtime()
    cfg = ModelConfig(
        dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=96, multiple_of=32, max_seq_len=32
    )
    torch.manual_seed(0)
    reference = Transformer(cfg)
    sharded = Transformer(cfg)
    sharded.load_state_dict(reference.state_dict())
    from torch.distributed.device_mesh import init_device_mesh

    apply_tensor_parallel(sharded, init_device_mesh("cpu", (runtime.world_size,), mesh_dim_names=("tp",)))
    batch = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    logits_diff = (sharded(batch[:, :-1]) - reference(batch[:, :-1])).abs().max().item()
    lm_loss(reference, batch).backward()
    lm_loss(sharded, batch).backward()
    grad_diff = 0.0
    local_heads = []
    for (name, p_ref), (_, p_tp) in zip(
        reference.named_parameters(), sharded.named_parameters(), strict=True
    ):
        grad = p_tp.grad.full_tensor() if hasattr(p_tp.grad, "full_tensor") else p_tp.grad
        grad_diff = max(grad_diff, (grad - p_ref.grad).abs().max().item())
        if name == "layers.0.attention.wk.weight":
            local_heads.append(p_tp.to_local().shape[0] // cfg.head_dim)
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump({"logits": logits_diff, "grads": grad_diff, "local_kv_heads": local_heads[0]}, f)
    shutdown(runtime)


if __name__ == "__main__":
    main()
