"""N learners as one (ray.num_learners): a torch.distributed process group over the LearnerWorker actors, with
DistributedDataParallel doing the gradient all-reduce (LoRA: every rank holds the frozen base and the adapter).

Every rank receives the step's whole batch (one object in Ray's object store), takes its share of whole groups,
and weighs its tokens by the whole batch's count, so the ranks' losses sum to the one-learner loss. DDP averages
gradients over ranks; each rank's loss is scaled by the world size to make that average the sum. With identical
gradients and the same seed, every rank's optimizer takes the same step: the adapters stay equal (rank 0 exports).
"""
from __future__ import annotations

import datetime
import socket

import torch
import torch.distributed as dist

from rl_lora.policy.logprobs import batch_logprobs
from rl_lora.types import Batch

GROUP_TIMEOUT = datetime.timedelta(minutes=10)


def rendezvous_address() -> tuple[str, int]:
    """This node's address and a free port: rank 0's, for the others to join."""
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


def join_group(address: str, port: int, rank: int, world_size: int, device: torch.device) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world_size,
                            timeout=GROUP_TIMEOUT)


def leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def group_share(repeats: torch.Tensor, rank: int, world_size: int) -> tuple[int, int]:
    """This rank's rows: a contiguous run of whole groups, the groups dealt as evenly as possible."""
    groups = len(repeats)
    size, extra = divmod(groups, world_size)
    first_group = rank * size + min(rank, extra)
    last_group = first_group + size + (rank < extra)
    ends = torch.cumsum(repeats, 0).tolist()
    first_row = ends[first_group - 1] if first_group else 0
    return first_row, ends[last_group - 1] if last_group else 0


class Logprobs(torch.nn.Module):
    """The learner's forward as a module, so DDP can wrap it: the log-prob path runs the backbone and the head
    apart (prompt sharing), never the model's own forward, which is where DDP would otherwise hook in."""

    def __init__(self, model, temperature: float):
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_logprobs(self.model, batch, self.temperature)


class DataParallel:
    """This rank's place in the group, and the DDP-wrapped forward."""

    def __init__(self, model, temperature: float, rank: int, world_size: int):
        from torch.nn.parallel import DistributedDataParallel

        self.rank, self.world_size = rank, world_size
        device = self.device = next(model.parameters()).device
        # DDP broadcasts rank 0's trainable parameters at the start: every rank begins from the same adapter.
        self.forward = DistributedDataParallel(Logprobs(model, temperature),
                                               device_ids=[device] if device.type == "cuda" else None)

    def share(self, batch: Batch) -> tuple[int, int]:
        return group_share(batch.repeats, self.rank, self.world_size)

    def sum_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        summed = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        return dict(zip(values, summed.tolist()))
