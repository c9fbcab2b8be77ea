"""Data-parallel training under ``torchrun``: which process this is, and the few collectives used.

One process (the default) is a world of size 1 and every method is a no-op, so the training loop
reads the same either way. Under ``torchrun --nproc-per-node N`` each process trains on its share
of every batch; DistributedDataParallel averages the gradients, so all ranks hold the same
weights; only rank 0 records to MLflow and writes outputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from trackvision.errors import TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda -> cuda:<local rank>."""
        if self.distributed and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model to run forward/backward through: DDP across ranks, else the model itself."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch of indices (every rank sees the same global order)."""
        return batch[self.rank :: self.size] if self.distributed else batch

    def sync_buffers(self, model: nn.Module) -> None:
        """Average floating buffers (BatchNorm statistics) over ranks; others come from rank 0.

        DDP keeps parameters equal, but each rank updates its running statistics from its own
        share of the data; synced at the end of every epoch, validation (and so early stopping
        and the best state) is the same on every rank.
        """
        if not self.distributed:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(self.size)
            else:
                dist.broadcast(buffer, src=0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (e.g. loss sums and counts for the epoch's metrics)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()


def current_world() -> World:
    """The world torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK), or one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_world(world: World, device: torch.device) -> None:
    """Join the process group: nccl between GPUs, gloo on CPUs. No-op for one process."""
    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d joined the %s process group", world.rank, world.size, backend)


def leave_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def check_supported(world: World, finetune: str) -> None:
    if world.distributed and finetune == "gradual":
        raise TrainingError(
            "train.finetune: gradual is not supported under torchrun (DistributedDataParallel "
            "needs the same trained parameters in every epoch); use full or linear_probe"
        )


def weights_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict, in order: equal digests = equal weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
