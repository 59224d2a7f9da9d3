"""The process's place in a torch.distributed job (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK).

One process without torchrun is a world of one: no process group, nothing to reduce. `rank`,
`world_size`, `is_rank0` and `barrier` are the one place the rest of the package asks.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llamafoundry.errors import UserError


def rank() -> int:
    """This process's rank in the job (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the job (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_rank0() -> bool:
    """Whether this process writes the job's files (the only process, or rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def max_over_ranks(value: int) -> int:
    """The largest of every rank's `value` (collective: every rank calls it; `value` without a group)."""
    if not dist.is_initialized():
        return value
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    tensor = torch.tensor(value, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def on_rank0(action: Callable[[], None], problem: Callable[[OSError], str]) -> None:
    """Run `action` on rank 0 only (collective); an OSError there becomes a UserError on every rank,
    worded by `problem`, so that no rank waits forever at the next collective for one that gave up."""
    error: OSError | None = None
    if is_rank0():
        try:
            action()
        except OSError as exc:
            error = exc
    if max_over_ranks(int(error is not None)):
        raise UserError(
            problem(error) if error else "rank 0 could not write the run's files: see its message"
        )


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


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """This rank's device: `name` ('cpu', 'cuda', 'cuda:1', ...; default: CUDA if available, else the
    CPU), with one GPU per local rank under torchrun unless `name` gives an index."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asks for CUDA, but no GPU is visible; use --device cpu")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    return device


def init_runtime(timeout_s: float = 600.0, device: str | None = None) -> Runtime:
    """Join the torchrun job if there is one (NCCL on CUDA, gloo on CPU) and pick this rank's device
    (see `pick_device`).

    Under torchrun a process group exists even for one rank, so FSDP2 runs on a single GPU too.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device, local_rank)
    if "TORCHELASTIC_RUN_ID" in os.environ and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return Runtime(rank(), world_size(), local_rank, device)


def shutdown(runtime: Runtime) -> None:
    """Leave the job cleanly: a barrier, then destroy the group (else processes abort at exit)."""
    if runtime.distributed:
        dist.barrier()
        dist.destroy_process_group()
