"""N learners as one (ray.num_learners): a torch.distributed process group over the LearnerWorker actors.

- LoRA: DistributedDataParallel does the gradient all-reduce; every rank holds the frozen base and the adapter.
- FullFT: FSDP2 (`fully_shard`, each decoder layer and then the root) shards the weights, gradients and AdamW state
  over the ranks. The root is the learner's log-prob forward (`Logprobs`), which runs the backbone and the head
  apart: sharded there, the embeddings, final norm and head (tied or not) are gathered for it. The full weights
  for the samplers and the checkpoint are gathered to rank 0 (torch.distributed.checkpoint's full state dict,
  offloaded to the CPU), once per step.

Every rank receives the step's whole batch (one object in Ray's object store), takes its share of whole groups,
and weighs its tokens by the whole batch's count, so the ranks' losses sum to the one-learner loss. DDP averages
gradients over ranks; each rank's loss is scaled by the world size to make that average the sum. With identical
gradients and the same seed, every rank's optimizer takes the same step: the adapters stay equal (rank 0 exports).
"""
from __future__ import annotations

import datetime
import socket
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist

from rl_lora.memory import return_large_frees_to_the_os
from rl_lora.policy.logprobs import batch_logprobs
from rl_lora.types import Batch

GROUP_TIMEOUT = datetime.timedelta(minutes=10)
# glibc's mmap threshold for a sharded learner on the CPU (rl_lora.memory.return_large_frees_to_the_os). Measured
# with scripts/bench_learner_group.py (SmolLM2 FullFT, 2 ranks): per-rank step peak 4.6 GB at glibc's default,
# see benchmarks/learner_group.json for this value.
SHARDED_CPU_MMAP_THRESHOLD = 1 << 20


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

    def __init__(self, model, temperature: float, entropy_grad: bool = False):
        super().__init__()
        self.model, self.temperature, self.entropy_grad = model, temperature, entropy_grad

    def forward(self, batch: Batch, chunk_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_logprobs(self.model, batch, self.temperature, chunk_tokens, self.entropy_grad)


class DataParallel:
    """This rank's place in the group, and the wrapped forward: DDP (`sharded` False) or FSDP2 (True)."""

    def __init__(self, model, temperature: float, rank: int, world_size: int, sharded: bool,
                 reduce_in_fp32: bool = False, entropy_grad: bool = False):
        """`reduce_in_fp32`: a bf16/fp16 model's gradients are reduce-scattered in fp32 (FSDP2's
        MixedPrecisionPolicy), then summed into its bf16 gradient shards, stepped through fp32 masters."""
        self.rank, self.world_size, self.sharded, self.model = rank, world_size, sharded, model
        device = self.device = next(model.parameters()).device
        if sharded:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
            from transformers.modeling_layers import GradientCheckpointingLayer

            # On the CPU, heap fragmentation, not tensors, had doubled the sharded learner's RSS.
            if device.type == "cpu" and SHARDED_CPU_MMAP_THRESHOLD:
                return_large_frees_to_the_os(SHARDED_CPU_MMAP_THRESHOLD)
            mesh = init_device_mesh(device.type, (world_size,))
            policy = MixedPrecisionPolicy(reduce_dtype=torch.float32 if reduce_in_fp32 else None)
            for layer in [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]:
                fully_shard(layer, mesh=mesh, mp_policy=policy)
            self.forward = fully_shard(Logprobs(model, temperature, entropy_grad), mesh=mesh, mp_policy=policy)
            # FSDP sets itself up on its first forward, which must enter through the root (a probe straight into
            # the model's own forward first would make each layer a root of its own): one token through it now.
            one = torch.zeros((1, 1), dtype=torch.long, device=device)
            with torch.no_grad():
                self.forward(Batch(one, torch.ones_like(one), torch.ones(1, dtype=torch.long, device=device), one,
                                   torch.ones((1, 1), device=device), torch.zeros((1, 1), device=device),
                                   torch.zeros(1, device=device)))
            self.forward.reshard()  # the root keeps its weights whole after a forward; the optimizer steps shards
        else:
            from torch.nn.parallel import DistributedDataParallel

            # DDP broadcasts rank 0's trainable parameters at the start: every rank begins from the same adapter.
            self.forward = DistributedDataParallel(Logprobs(model, temperature, entropy_grad),
                                                   device_ids=[device] if device.type == "cuda" else None)

    def accumulating(self, last_pass: bool):
        """DDP: all-reduce in the share's last backward pass only. FSDP reduce-scatters each pass into the
        sharded gradients."""
        return self.forward.no_sync() if not self.sharded and not last_pass else nullcontext()

    @contextmanager
    def gathered(self):
        """The root's parameters whole, for a forward that does not go through `forward` (the probe)."""
        if self.sharded:
            self.forward.unshard()
        try:
            yield
        finally:
            if self.sharded:
                self.forward.reshard()

    def full_state_dict(self) -> dict:
        """The sharded model's weights, whole, on rank 0's CPU (the other ranks get {}): a collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_full_state(self, weights: dict) -> None:
        """The whole weights (rank 0's checkpoint) into this rank's shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True, strict=False))

    def load_named_optimizer_state(self, optimizer, state: dict) -> None:
        """An optimizer state keyed by parameter names, as torch.distributed.checkpoint wrote it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, optimizer, state,
                                 options=StateDictOptions(full_state_dict=True, strict=False))

    @staticmethod
    def whole(value):
        """Every sharded tensor in `value` (nested dicts and lists) gathered whole to the CPU: a collective."""
        if isinstance(value, dict):
            return {k: DataParallel.whole(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(DataParallel.whole(v) for v in value)
        if hasattr(value, "full_tensor"):
            return value.full_tensor().cpu()
        return value

    @staticmethod
    def shard_like(whole: torch.Tensor, like) -> torch.Tensor:
        """This rank's shard of a whole tensor, placed as the sharded tensor `like` is."""
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(whole.to(like.device, like.dtype), like.device_mesh, like.placements)

    @staticmethod
    def shard_state(state: dict, params: list) -> dict:
        """A whole optimizer state_dict (index-keyed, from `whole`) sharded like `params` for load_state_dict."""
        sharded = {index: {k: DataParallel.shard_like(v, params[index]) if torch.is_tensor(v) and v.dim() > 0 else v
                           for k, v in values.items()} for index, values in state["state"].items()}
        return {"state": sharded, "param_groups": state["param_groups"]}

    def share(self, batch: Batch) -> tuple[int, int]:
        return group_share(batch.repeats, self.rank, self.world_size)

    def min_over_ranks(self, value: float) -> float:
        smallest = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
        return smallest.item()

    def sum_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        summed = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        return dict(zip(values, summed.tolist()))
