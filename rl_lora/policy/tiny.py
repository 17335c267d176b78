"""TinyLoRA: an adapter of U trainable numbers for the whole model (Morris et al., "Learning to Reason in 13
Parameters", arXiv 2602.04118, building on LoRA-XS).

For each adapted weight W (d_out x d_in) a truncated SVD W ~ U_r S_r V_r^T of rank r is computed once and frozen;
the update is

    dW = U_r S_r R V_r^T,   R = sum_i v_i P_i,

with P_i fixed random r x r matrices (seeded) and v the trainable vector. v is tied across modules: the modules are
split into `groups` contiguous blocks (in the model's module order), each block shares one v of U / groups numbers,
so the model trains exactly U parameters (groups=1: every module shares one v, the paper's extreme tying).

It travels as an ordinary rank-r LoRA: B = U_r S_r R (d_out x r), A = V_r^T (r x d_in), scaling 1 (lora_alpha =
r). The learner holds a real PEFT LoRA model whose lora_A weights are V_r^T (frozen) and whose lora_B weights are
parametrized by v (torch.nn.utils.parametrize), so PEFT's forward, disable_adapter (the KL reference) and the
in-process sampler need nothing new, and samplers, checkpoints and the probe take the exported tensors unchanged.

Where this differs from the paper: P_i's entries are N(0, 1/u) (the paper does not fix a scale; with 1/u, an LR
moves R at the same pace whatever U is, so one LR centre serves tiny:13 and tiny:1000); the SVD rank is 2 unless
U needs more independent directions (at most modules x r^2 exist); groups are contiguous blocks of modules rather
than the paper's layer-stride tying.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from rl_lora.errors import UserError

MAX_RANK = 8  # vLLM's smallest max_lora_rank (and the engines' default): a tiny adapter is served as a LoRA


@dataclass(frozen=True)
class TinyPlan:
    """How U parameters spread over a model's adapted modules."""
    params: int  # U: trainable numbers in the whole model
    groups: int  # blocks of modules; each shares one vector v
    rank: int  # r: the truncated SVD's rank, and the exported LoRA's
    modules: int  # adapted modules (linear layers)

    @property
    def per_group(self) -> int:  # u: the length of each group's v
        return self.params // self.groups

    @classmethod
    def make(cls, params: int, groups: int, rank: int | None, modules: int) -> "TinyPlan":
        """Refuses, in one line, a U the grouping cannot express: U not divisible by the groups, more groups than
        modules, or more numbers per group than independent directions (each module's R has r^2)."""
        label = f"tiny:{params}"
        if params < 1:
            raise UserError(f"{label}: a tiny adapter trains at least 1 parameter (lora.tiny_params >= 1)")
        if not 1 <= groups <= modules:
            raise UserError(f"{label}: lora.tiny_groups={groups} must be between 1 and the {modules} adapted modules")
        if params % groups:
            raise UserError(f"{label} cannot be split over lora.tiny_groups={groups} tied groups ({params} is not a "
                            f"multiple of {groups}): choose a U that is, or tiny_groups=1")
        smallest_block = modules // groups  # the fewest modules any group holds
        per_group = params // groups
        if rank is None:  # 2 (the paper's), or the smallest rank with enough directions
            rank = 2
            while smallest_block * rank * rank < per_group and rank < MAX_RANK:
                rank += 1
        if smallest_block * rank * rank < per_group:
            need = math.ceil(math.sqrt(per_group / smallest_block))
            hint = f"set lora.tiny_rank={need}" if need <= MAX_RANK else \
                f"raise lora.tiny_groups or lower U (rank is at most {MAX_RANK})"
            raise UserError(f"{label}: {per_group} numbers per group over {smallest_block} modules of rank "
                            f"{rank} ({smallest_block} x {rank}^2 = {smallest_block * rank * rank} independent "
                            f"directions) would train redundant parameters: {hint}")
        return cls(params, groups, rank, modules)


class TinyUpdate(nn.Module):
    """The parametrization of one module's lora_B: B = (U_r S_r) (sum_i v_i P_i). The stored lora_B it replaces is
    ignored (it stays PEFT's zeros, frozen)."""

    def __init__(self, us: torch.Tensor, projections: torch.Tensor, vector: nn.Parameter):
        super().__init__()
        self.register_buffer("us", us, persistent=False)  # d_out x r: U_r S_r
        self.register_buffer("projections", projections, persistent=False)  # u x r x r: the P_i
        self.vector = vector  # u: shared with every module of the group

    def forward(self, stored_b: torch.Tensor) -> torch.Tensor:
        r = torch.einsum("u,uij->ij", self.vector, self.projections)
        return (self.us @ r).to(stored_b.dtype)


def lora_layers(model) -> list[tuple[str, nn.Module]]:
    """The PEFT LoRA layers, in module order, under the names their exported keys start with."""
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]


class TinyAdapter:
    """Turns a PEFT LoRA model of rank r (lora_alpha = r) into a tiny adapter of U numbers, in place."""

    def __init__(self, model, plan: TinyPlan, seed: int, cache_dir: Path):
        layers = lora_layers(model)
        self.plan = plan
        self.model, self.layers = model, layers
        bases = svd_bases(model, layers, self.plan.rank, cache_dir)
        generator = torch.Generator().manual_seed(1_000_003 * seed + 7)
        u, r = self.plan.per_group, self.plan.rank
        device = layers[0][1].lora_A["default"].weight.device
        # v = 0: dW = 0, the adapted model starts exactly at the base model.
        self.vectors = nn.ParameterList(nn.Parameter(torch.zeros(u, device=device)) for _ in range(plan.groups))
        for index, (name, layer) in enumerate(layers):
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            if a.shape[0] != r:
                raise ValueError(f"{name}: the PEFT LoRA has rank {a.shape[0]}, the tiny plan {r}")
            us, vh = bases[name]
            with torch.no_grad():
                a.copy_(vh.to(a.dtype))
            a.requires_grad_(False)
            b.requires_grad_(False)
            projections = torch.randn(u, r, r, generator=generator) / math.sqrt(u)
            vector = self.vectors[index * self.plan.groups // len(layers)]
            parametrize.register_parametrization(
                layer.lora_B["default"], "weight",
                TinyUpdate(us.to(b.device, torch.float32), projections.to(b.device), vector), unsafe=True)
            layer.lora_B["default"].parametrizations.weight.original.requires_grad_(False)

    def lora_config(self, base: dict) -> dict:
        """The exported adapter's PEFT config: rank r, scaling alpha / r = 1."""
        return {**base, "r": self.plan.rank, "lora_alpha": float(self.plan.rank), "lora_dropout": 0.0}

    @torch.no_grad()
    def tensors(self) -> dict[str, torch.Tensor]:
        """The rank-r LoRA, CPU copies under get_peft_model_state_dict's key names."""
        out = {}
        for name, layer in self.layers:
            out[f"{name}.lora_A.weight"] = layer.lora_A["default"].weight.detach().to("cpu", copy=True)
            out[f"{name}.lora_B.weight"] = layer.lora_B["default"].weight.detach().to("cpu", copy=True)
        return out

    @property
    def exported_bytes(self) -> int:
        """The rank-r LoRA's size in fp32 (A and B of every module)."""
        return 4 * sum(layer.lora_A["default"].weight.numel() + layer.lora_B["default"].weight.numel()
                       for _, layer in self.layers)

    def state(self) -> list[torch.Tensor]:
        """The U trained numbers (what a checkpoint must keep for an exact resume)."""
        return [v.detach().cpu().clone() for v in self.vectors]

    @torch.no_grad()
    def load(self, saved: list[torch.Tensor]) -> None:
        if [tuple(s.shape) for s in saved] != [tuple(v.shape) for v in self.vectors]:
            raise UserError("the checkpoint's tiny adapter has another shape (lora.tiny_params / tiny_groups)")
        for vector, value in zip(self.vectors, saved):
            vector.copy_(value)


def tiny_peft_model(model, peft_config: dict, lora, seed: int, cache_dir: Path):
    """The PEFT LoRA model of the plan's rank (scaling 1) made tiny: (model, adapter)."""
    from peft import LoraConfig, get_peft_model

    counted = get_peft_model(model, LoraConfig(**{**peft_config, "r": 1}))  # which modules PEFT adapts
    modules = len(lora_layers(counted))
    model = counted.unload()  # get_peft_model wraps the model in place: take the counting layers off again
    plan = TinyPlan.make(lora.tiny_params, lora.tiny_groups, lora.tiny_rank, modules)
    config = {**peft_config, "r": plan.rank, "lora_alpha": float(plan.rank), "lora_dropout": 0.0}
    peft_model = get_peft_model(model, LoraConfig(**config))
    return peft_model, TinyAdapter(peft_model, plan, seed, cache_dir)


# ---- the frozen bases ----------------------------------------------------------------------------------

def _fingerprint(weights: list[tuple[str, torch.Tensor]], rank: int) -> str:
    """Names, shapes and a strided sample of every adapted weight: another model (or another fine-tune of the
    same one) gets another cache file, without hashing gigabytes."""
    digest = hashlib.sha256(f"rank={rank}".encode())
    for name, weight in weights:
        flat = weight.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().contiguous()
        digest.update(f"{name}{tuple(weight.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:24]


def svd_bases(model, layers, rank: int, cache_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each module's (U_r S_r, V_r^T) in float32, read from the cache or computed once and written there. The
    cache matters beyond speed: singular vectors are defined up to sign, and a resume has to see the same ones."""
    from safetensors.torch import load_file, save_file

    weights = [(name, layer.get_base_layer().weight) for name, layer in layers]
    path = cache_dir / "tiny-svd" / f"{_fingerprint(weights, rank)}.safetensors"
    if path.is_file():
        saved = load_file(str(path))
        return {name: (saved[f"{name}.us"], saved[f"{name}.vh"]) for name, _ in weights}
    bases, tensors = {}, {}
    for name, weight in weights:
        u, s, vh = torch.linalg.svd(weight.detach().float().cpu(), full_matrices=False)
        bases[name] = ((u[:, :rank] * s[:rank]).contiguous(), vh[:rank].contiguous())
        tensors[f"{name}.us"], tensors[f"{name}.vh"] = bases[name]
    size_mb = sum(t.numel() * 4 for t in tensors.values()) / 2**20
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file(tensors, str(partial))
        partial.replace(path)  # whole or absent: a killed write leaves no half file under the real name
    except OSError as error:
        raise UserError(f"a tiny adapter caches the base model's rank-{rank} SVD ({size_mb:.1f} MB) in "
                        f"{path.parent}, which cannot be written ({error.strerror or error}): set RL_LORA_CACHE to "
                        "a writable folder") from None
    return bases
