"""Where the model computes and in what precision: `model.device` and `model.dtype`, `auto` resolved and checked in
one place, before any model loads.

auto device: a CUDA GPU when torch sees one, else the CPU. auto dtype: bfloat16 on a GPU with native bf16 (compute
capability 8.0, Ampere, and later), else float32. Never float16: it trains safely only with loss scaling, which
rl-lora does not do (FullFT in bf16 steps fp32 masters; LoRA trains an fp32 adapter over the bf16 base).

Resolved where the model lives. An in-process run (rollout.num_workers=0) loads the model in the driver, so the
driver resolves it against its own hardware. With Ray, the driver may sit on a CPU-only head node while the learner
and the workers run on GPU nodes: each actor resolves on its own node (rl_lora.cluster.actors), and there `auto`
means the GPU Ray granted it (ray.learner_gpus, ray.worker_gpus), else the CPU. A GPU Ray did not reserve for the
actor is not its to use, though torch sees it (Ray leaves CUDA_VISIBLE_DEVICES alone for an actor granted none).
The learner and the samplers compute in one dtype: rl_lora.cluster.placement.plan_compute.

config.yaml keeps `auto` as given (a resume with auto is no change); the run folder's code.json records the device
and dtype each session resolved to, and a resume whose dtype differs from the last session's says so.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar

from rl_lora.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")
CUDA_DEVICE = r"cuda(?::(\d+))?"


class ModelSpec(Protocol):
    """What this module reads of rl_lora.config.ModelConfig (which sits above it: config asks on_cuda)."""
    device: str
    dtype: str


Model = TypeVar("Model", bound=ModelSpec)


@dataclass(frozen=True)
class Compute:
    """A resolved model.device and model.dtype, and the line a run prints first to say what it chose and why."""
    device: str
    dtype: str
    line: str

    def apply(self, model: Model) -> Model:
        """`model` with this device and dtype: what loads the model reads; config.yaml keeps the values as given."""
        return dataclasses.replace(model, device=self.device, dtype=self.dtype)


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def on_cuda(spec: str) -> bool:
    """Whether model.device puts the model on a CUDA GPU in this process (auto: when torch sees one). No checks:
    RunConfig.engine_sleeps asks this of configs that resolve() has not seen yet."""
    return spec.startswith("cuda") or (spec == "auto" and cuda_device_count() > 0)


def _why_no_cuda() -> str:
    import torch

    if torch.version.cuda is None and torch.version.hip is None:
        return f"torch {torch.__version__} is a CPU-only build (make install-gpu installs the CUDA one)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return f"torch {torch.__version__} sees no CUDA GPU on this machine (no GPU or no driver{hidden})"


def resolve_device(spec: str, cuda_count: int | None = None) -> str:
    """model.device as a torch device on this machine: auto -> cuda or cpu; cpu, cuda and cuda:N as given, once this
    machine has them (else a UserError saying what it has). `cuda_count`: the CUDA GPUs torch sees (None: ask it)."""
    if cuda_count is None:
        cuda_count = cuda_device_count()
    if spec == "auto":
        return "cuda" if cuda_count else "cpu"
    if spec == "cpu":
        return spec
    match = re.fullmatch(CUDA_DEVICE, spec)
    if match is None:
        raise UserError(f"model.device={spec}: not a device rl-lora runs on; use auto, cpu, cuda or cuda:N")
    if cuda_count == 0:
        raise UserError(f"model.device={spec}: {_why_no_cuda()}; use model.device=auto (the CPU here) or cpu")
    index = int(match[1] or 0)
    if index >= cuda_count:
        have = "cuda:0" if cuda_count == 1 else f"cuda:0 to cuda:{cuda_count - 1}"
        raise UserError(f"model.device={spec}: this machine has {cuda_count} CUDA GPU{'s' * (cuda_count > 1)} "
                        f"({have})")
    return spec


def native_kernels(dtype: str, device: str) -> bool:
    """Whether `device` computes in `dtype` natively, rather than emulated at many times float32's cost: on the CPU,
    oneDNN's AVX512-BF16 / AMX / AVX512-FP16; on a GPU, bf16 from compute capability 8.0 (fp16 on every one)."""
    import torch

    if dtype == "float32" or (dtype == "float16" and device != "cpu"):
        return True
    if device == "cpu":
        probe = {"bfloat16": torch.ops.mkldnn._is_mkldnn_bf16_supported,
                 "float16": torch.ops.mkldnn._is_mkldnn_fp16_supported}[dtype]
        return bool(probe())
    with torch.cuda.device(torch.device(device)):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_dtype(spec: str, device: str, native: Callable[[str, str], bool] | None = None) -> str:
    """model.dtype for a model on `device` (a resolved one): auto -> bfloat16 on a GPU with native bf16, else
    float32; an explicit dtype `device` would only emulate is a UserError. `native`: native_kernels, or a stand-in."""
    native = native or native_kernels
    if spec == "auto":
        return "bfloat16" if device != "cpu" and native("bfloat16", device) else "float32"
    if spec not in DTYPES:
        raise UserError(f"model.dtype={spec}: use auto, {', '.join(DTYPES)}")
    if native(spec, device):
        return spec
    if device == "cpu":
        raise UserError(f"model.dtype={spec} on this CPU: torch has no native {spec} kernels here (no AVX512-BF16/AMX),"
                        " so it would run emulated, far slower than float32; use model.dtype=auto or float32 on this "
                        "machine (bf16 belongs on GPUs and recent server CPUs)")
    raise UserError(f"model.dtype={spec} on {device}: this GPU has no native bfloat16 (GPUs have it from compute "
                    "capability 8.0, Ampere, on), so it would run emulated, far slower; use model.dtype=auto "
                    "(float32 here) or float32")


def resolve(model: ModelSpec, ray_gpus: int | None = None) -> Compute:
    """model.device and model.dtype for a model that loads in this process, checked. `ray_gpus`: in a Ray actor, the
    GPUs Ray granted it (None: not an actor)."""
    if ray_gpus:  # the actor sees its grant as cuda:0 (CUDA_VISIBLE_DEVICES), whatever model.device says
        device = "cuda"
        why = f"the GPU Ray granted this actor: {_gpu_name(device)}"
    elif ray_gpus == 0 and model.device == "auto":
        device, why = "cpu", "auto: Ray granted this actor no GPU"
    else:
        device = resolve_device(model.device)
        why = _device_why(model.device, device)
    dtype = resolve_dtype(model.dtype, device)
    if model.dtype != "auto":
        dtype_why = ""
    elif device == "cpu":
        dtype_why = "auto: float32 on a CPU"
    else:
        dtype_why = f"auto: this GPU has {'native' if dtype == 'bfloat16' else 'no native'} bf16"
    line = f"device {device}{f' ({why})' if why else ''}, dtype {dtype}{f' ({dtype_why})' if dtype_why else ''}"
    return Compute(device, dtype, line)


def _gpu_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def _device_why(spec: str, device: str) -> str:
    if device == "cpu":
        return "auto: torch sees no CUDA GPU" if spec == "auto" else ""
    if spec != "auto":
        return _gpu_name(device)
    count = cuda_device_count()
    return f"auto: {_gpu_name(device)}" + (f", the first of {count} CUDA GPUs" if count > 1 else "")
