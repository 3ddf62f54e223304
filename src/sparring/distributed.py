"""torch.distributed for evaluation under torchrun: the process group, sample shards and gathers.

`torchrun --nproc-per-node N -m sparring evaluate ...` (or `run`) starts N processes; each attacks
every N-th batch of the samples (gloo on CPU, NCCL on CUDA, one GPU per local rank), the adversarial
examples are summed into every rank (each row is non-zero on exactly one rank, so the sum is
exact), and every rank computes the same records, which rank 0 alone writes. Randomness is keyed
by sample index (SampleGenerators), so the per-sample results equal a single process's.

    dist = setup("cpu")            # Dist(rank=0, world=1) outside torchrun
    mine = dist.batches(rows, 256)  # every world-th batch of 256, from the rank-th
    x_adv = dist.combine(x, torch.cat(mine), x_adv_mine)
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import InputError

__all__ = ["Dist", "current", "rank_device", "setup", "solo"]

_STATE: dict[str, Dist] = {}


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size and local rank (one process = world 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def batches(self, rows: Tensor, batch_size: int) -> list[Tensor]:
        """This rank's batches of `rows`: the single-process batches (rows cut every batch_size), every
        world-th of them starting at rank. A batch keeps the same samples as in one process, so even
        attacks whose float rounding depends on the batch give bit-identical results."""
        cut = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        return cut[self.rank :: self.world] if self.active else cut

    def combine(self, x: Tensor, mine: Tensor, values: Tensor) -> Tensor:
        """x with the rows `mine` replaced by `values`, and every other rank's rows by theirs."""
        out = x.clone()
        if not self.active:
            out[mine] = values
            return out
        taken = torch.zeros(len(x), dtype=torch.float32)
        taken[mine] = 1.0
        part = torch.zeros_like(x)
        part[mine] = values
        part, taken = _all_reduce(part), _all_reduce(taken)
        out[taken > 0] = part[taken > 0]
        return out

    def total(self, value: float, op: str = "sum") -> float:
        """The sum (or max) of a number over the ranks."""
        if not self.active:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        return float(_all_reduce(t, op)[0])

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def _all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    dist = torch.distributed
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    buf = t.to(device).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return buf.to(t.device)


def current() -> Dist:
    """The Dist of this process: set by setup(), else a single process."""
    return _STATE.get("dist", Dist())


def setup(device: str) -> Dist:
    """Join torchrun's job when WORLD_SIZE > 1 (once per process): gloo for "cpu", NCCL for CUDA with
    this process on GPU LOCAL_RANK. Returns Dist(rank, world, local_rank); a single process otherwise."""
    if "dist" in _STATE:
        return _STATE["dist"]
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        _STATE["dist"] = Dist()
        return _STATE["dist"]
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(device).startswith("cuda")
    if cuda:
        if local >= torch.cuda.device_count():
            raise InputError(f"expected a GPU for local rank {local}, got {torch.cuda.device_count()} GPU(s): "
                             "start at most one process per GPU")
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=12))
    _STATE["dist"] = Dist(rank, world, local)
    return _STATE["dist"]


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Within this block this process acts alone (current() is a single process): rank 0 training what
    DistributedDataParallel does not cover while the other ranks wait."""
    saved = _STATE.get("dist")
    _STATE["dist"] = Dist()
    try:
        yield
    finally:
        if saved is None:
            _STATE.pop("dist", None)
        else:
            _STATE["dist"] = saved


def rank_device(dist: Dist, device: str) -> str:
    """The device of this rank: "cuda" becomes "cuda:LOCAL_RANK" in a job, anything else is kept."""
    return f"cuda:{dist.local_rank}" if dist.active and device == "cuda" else device
