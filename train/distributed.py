"""Training on several processes (GPUs, nodes) with torchrun and DistributedDataParallel.

    torchrun --standalone --nproc_per_node 4 train.py --model-dir models/pneumonia data/pneumonia
    torchrun --nnodes 2 --node_rank N --master_addr HOST --master_port 29500 --nproc_per_node 8 train.py ...

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them (python3 train.py) training runs in one
process with no process group. Under torchrun each process trains on CUDA device LOCAL_RANK with
NCCL (or on the CPU with gloo), on its own shard of the train split (DistributedSampler), with its
own augmentation randomness; batch norm keeps per-process statistics. --batch-size is per process,
as in torchvision's references: the global batch is processes x batch size (the default --lr scales
with it, train/optim.py). Rank 0 alone validates, prints and writes; it sends the validation result
to the other ranks, so every rank takes the same model_best, plateau and early-stop decisions.
Every node reads the data (and a --resume checkpoint) at the same path; the model directory is
written on rank 0's node.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, TextIO, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.train.loop import EpochStats

T = TypeVar("T")


class DistributedError(ToolkitError):
    """A torchrun launch this machine or this torch build cannot run."""


@dataclass
class Distributed:
    """This process's place in the job; a one-process run is rank 0 of 1, with no process group."""

    device: torch.device  # under torchrun with CUDA: cuda:LOCAL_RANK
    rank: int = 0
    world_size: int = 1
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(device_ids=[self.device.index] if self.backend == "nccl" else None)

    def augmentation_seed(self, seed: int, start_epoch: int = 0) -> int:
        """The seed of this rank's augmentation generator: ``seed`` itself for rank 0 of a new run (a
        one-process run's), another stream per rank, and per epoch a resumed DDP run starts at."""
        return seed + self.rank + self.world_size * start_epoch

    def shard_size(self, images: int) -> int:
        """Images each rank trains on per epoch (DistributedSampler pads the shards to one length, so
        every rank takes the same number of steps)."""
        return math.ceil(images / self.world_size)

    def shard_order(self, images: int, seed: int, epoch: int) -> Optional[torch.Tensor]:
        """This rank's sample indices for ``epoch``; None in one process, where the run's generator
        orders the epoch (which a resumed run repeats exactly)."""
        if not self.enabled:
            return None
        sampler = DistributedSampler(range(images), num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=seed)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls. DDP averages the gradients of the parameters that train
        when it wraps the model, so wrap again whenever that set changes (--unfreeze-at); the model
        itself stays unwrapped, and so do the checkpoints' state dicts."""
        if not self.enabled:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def from_main(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` computed on rank 0 and handed to every rank."""
        if not self.enabled:
            return function(*args)
        box = [function(*args) if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def job_stats(self, stats: EpochStats) -> EpochStats:
        """The whole job's epoch: loss and accuracy over every rank's images, throughput as all those
        images over the epoch's time."""
        if not self.enabled:
            return stats
        totals = torch.tensor([stats.loss * stats.images, stats.accuracy * stats.images, stats.images],
                              dtype=torch.float64, device=self.device)
        # The ranks step together and finish together, but start apart (rank 0 saves the last epoch
        # while the others go on and wait for it): the last to start times the epoch itself.
        seconds = torch.tensor([stats.seconds], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        dist.all_reduce(seconds, op=dist.ReduceOp.MIN)
        loss, accuracy, images = totals.tolist()
        return EpochStats(loss / max(images, 1), accuracy / max(images, 1), seconds.item(),
                          images / max(seconds.item(), 1e-9), int(images))


def check_launch(backend: str, device: torch.device, local_world_size: int) -> None:
    """Refuse, in one line, a launch that cannot work here."""
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; train in one process (python3 train.py)")
    if backend == "gloo":
        return
    if device.type != "cuda" or not torch.cuda.is_available():
        raise DistributedError(f"the {backend} back-end needs CUDA GPUs, and training is on {device}; "
                               "use --device cpu for gloo, or run where torch sees a GPU")
    if not dist.is_nccl_available():
        raise DistributedError("this torch build has no NCCL, which DistributedDataParallel on CUDA needs; "
                               "train on one GPU (python3 train.py) or on CPUs (--device cpu)")
    gpus = torch.cuda.device_count()
    if local_world_size > gpus:
        raise DistributedError(f"torchrun started {local_world_size} processes on this node, which has {gpus} "
                               f"CUDA GPU(s); one process per GPU: --nproc_per_node {gpus} or fewer")


def backend_for(device: torch.device) -> str:
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise DistributedError(f"DistributedDataParallel trains on CUDA (nccl) or CPUs (gloo), not on {device}")


def launched_rank() -> int:
    """This process's rank under torchrun (0 when started on its own)."""
    return int(os.environ.get("RANK", "0"))


class _NoTerminal:
    """A stream that says it is no terminal: tqdm (disable=None) then draws no bar on it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Ranks other than 0 print nothing (stdout goes to /dev/null) and draw no progress bars; their
    errors, warnings and tracebacks still reach stderr."""
    stderr = sys.stderr
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        sys.stderr = _NoTerminal(stderr)
        try:
            yield
        finally:
            sys.stderr = stderr


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Distributed]:
    """The job this process belongs to, for training on ``device``: under torchrun a process group
    (destroyed on the way out, however training ends) and this rank's GPU; otherwise no group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield Distributed(device)
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    backend = backend_for(device)
    check_launch(backend, device, int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1)))
    if device.type == "cuda":
        # One GPU per process: LOCAL_RANK picks it, whatever --device names (CUDA_VISIBLE_DEVICES limits the set).
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    job = Distributed(device, rank, world_size, backend)
    try:
        with contextlib.nullcontext() if job.is_main else _quiet():
            yield job
        # No rank leaves while rank 0 still writes, or tears down its group under a peer's last collective.
        job.barrier()
    finally:
        dist.destroy_process_group()
