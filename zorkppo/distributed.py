"""Data-parallel replicas over torch.distributed (gloo on CPU, NCCL on GPUs).

`python -m zorkppo.launch` starts one process per replica through torchrun, which sets
RANK, WORLD_SIZE and LOCAL_RANK. Every replica plays its own games and computes its own
losses; what must agree is reduced here, so that all replicas take the same decisions and
hold the same weights: gradients (averaged), advantage statistics, KL, and the few
objects that only rank 0 writes. With one process nothing here touches torch.distributed,
so the default run is the plain single-process program.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from zorkppo.errors import UserError


@dataclass(frozen=True)
class Replicas:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the only replica that writes artifacts and logs."""
        return self.rank == 0

    def split(self, count: int, name: str) -> int:
        """This replica's share of `count` (games, minibatch rows): equal shares, or an error."""
        if count % self.world:
            raise UserError(
                f"{name} is {count}: it must split evenly over {self.world} processes "
                f"(set it to a multiple of {self.world}, or change processes)"
            )
        return count // self.world

    # --- reductions (identities with one process) -------------------------------------------

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        buffer = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(buffer)
        return buffer.tolist()

    def mean(self, value: float) -> float:
        return value if self.world == 1 else self.sum([value])[0] / self.world

    def moments(self, x: torch.Tensor) -> tuple[float, float, int]:
        """Mean, (biased) std and count of every replica's values of x together."""
        total, count = self.sum([float(x.double().sum()), float(x.numel())])
        mean = total / max(count, 1)
        (squares,) = self.sum([float(((x.double() - mean) ** 2).sum())])
        return mean, (squares / max(count, 1)) ** 0.5, int(count)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of each gradient over replicas, in one flat all-reduce (what DDP does)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(p).to(g.dtype)
            offset += g.numel()

    def broadcast_parameters(self, params: list[torch.nn.Parameter]) -> None:
        """Rank 0's values everywhere: replicas start from one set of weights."""
        if self.world == 1:
            return
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def gather(self, obj) -> list:
        """Every replica's `obj`, in rank order, on every replica."""
        if self.world == 1:
            return [obj]
        result = [None] * self.world
        dist.all_gather_object(result, obj)
        return result

    def broadcast(self, obj):
        """Rank 0's `obj` on every replica."""
        if self.world == 1:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def check_identical(self, tensors: list[torch.Tensor], what: str) -> str:
        """sha256 of `tensors` on this replica; raises unless every replica has the same."""
        digest = hashlib.sha256()
        for t in tensors:
            digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digests = self.gather(digest.hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"{what} differ between replicas: {digests}")
        return digests[0]

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


ONE_PROCESS = Replicas()  # the default everywhere: no torch.distributed at all


def _die_with_parent() -> None:
    """A replica whose launcher is killed (kill -9 included) dies too, instead of living on
    as an orphan that could still write a checkpoint under the rerun's feet."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the launcher died before the line above
            os._exit(1)


def init_replicas(device: torch.device) -> tuple[Replicas, torch.device]:
    """This process's place among the replicas (from torchrun's environment) and its device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Replicas(), device
    _die_with_parent()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process {local_rank} on this node has no GPU ({torch.cuda.device_count()} "
                "visible): set processes to at most the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Replicas(rank, world, local_rank), device


def close_replicas(replicas: Replicas) -> None:
    if replicas.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
