"""The process's place in a torch.distributed job (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK).

One process without torchrun is a world of one: no process group, nothing to reduce.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Part of a torchrun job (a process group exists), even a job of one rank."""
        return dist.is_initialized()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average of a scalar tensor over ranks (identity in a world of one)."""
        if self.world_size > 1:
            value = value.detach().clone()
            dist.all_reduce(value, op=dist.ReduceOp.AVG if self.device.type == "cuda" else dist.ReduceOp.SUM)
            if self.device.type != "cuda":  # gloo has no AVG
                value /= self.world_size
        return value

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_runtime(timeout_s: float = 600.0) -> Runtime:
    """Join the torchrun job if there is one (NCCL on CUDA, gloo on CPU) and pick this rank's device.

    Under torchrun a process group exists even for one rank, so FSDP2 runs on a single GPU too.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if "TORCHELASTIC_RUN_ID" in os.environ and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return Runtime(rank, world_size, local_rank, device)


def shutdown(runtime: Runtime) -> None:
    """Leave the job cleanly: a barrier, then destroy the group (else processes abort at exit)."""
    if runtime.distributed:
        dist.barrier()
        dist.destroy_process_group()
