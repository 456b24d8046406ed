"""One process or many: PyTorch's own distributed engine, started by torchrun.

    torchrun --nproc_per_node 4 -m training.train ...              # 4 GPUs on one machine
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 \\
             --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m training.train ...   # 2 machines

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; each process then joins the group (NCCL on GPUs,
gloo on the CPU), takes GPU LOCAL_RANK and its share of the CPU threads. Without torchrun the
run is a single process and none of this happens.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from inference.torch_runtime import choose_device

TIMEOUT = timedelta(hours=2)  # preprocessing or validation on one rank may keep the others waiting


@dataclass(frozen=True)
class World:
    """This process's place: rank among size processes, local_rank on its machine, its device."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this process logs, validates and writes checkpoints."""
        return self.rank == 0


def start(requested_device: str) -> World:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(requested_device, local_rank)
    if size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:  # processes on one machine share its cores
            local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_size))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return World(rank, size, local_rank, device)


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def mean_over_processes(value: float, world: World) -> float:
    """The mean of a number over all processes (the number itself in a single process)."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return float(tensor) / world.size


def any_process(flag: bool, world: World) -> bool:
    """Whether the flag is set in any process."""
    if world.size == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor)


def gathered(items: list[str], world: World) -> list[str]:
    """Every process's items, in rank order, in every process (the items themselves in one)."""
    if world.size == 1:
        return list(items)
    every: list[list[str] | None] = [None] * world.size
    dist.all_gather_object(every, list(items))
    return [item for part in every for item in (part or [])]


def gathered_objects(item: object, world: World) -> list:
    """Every process's item (any picklable object), in rank order, in every process."""
    if world.size == 1:
        return [item]
    every: list = [None] * world.size
    dist.all_gather_object(every, item)
    return every


def from_main(value: float, world: World) -> float:
    """The main process's value of a number, in every process (so that all decide alike)."""
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.broadcast(tensor, src=0)
    return float(tensor)


def stop(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
