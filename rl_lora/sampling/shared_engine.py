"""One vLLM engine serving several runs' policies, each in its own LoRA slot: runs that differ only in their
adapter (rank, LR) sample from one engine, so a rank sweep costs one engine, not one per arm.

Each run sees an `EngineSlot`, a rollout backend like any other (generate, load_update, probe_logprobs). The
runs train side by side in one process (`rl_lora.run.shared_runs`), one thread each; the engine is not thread-safe,
so a slot takes the engine's lock for each call, and one run's learner trains while another run samples.
"""
from __future__ import annotations

import threading

from rl_lora.config import TrainMode
from rl_lora.errors import UserError
from rl_lora.types import AdapterUpdate, Completion, Probe, SamplingParams

# The max_lora_rank values this vLLM accepts, from VLLMBackend's default (8) up.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def engine_lora_rank(ranks: list[int]) -> int:
    """The smallest max_lora_rank vLLM accepts that holds every run's adapter."""
    need = max(ranks)
    for rank in VLLM_LORA_RANKS:
        if rank >= need:
            return rank
    raise UserError(f"LoRA rank {need} is above what vLLM serves (max_lora_rank <= {VLLM_LORA_RANKS[-1]})")


class SharedEngine:
    def __init__(self, engine):
        """`engine`: a VLLMBackend started with serve=lora and a LoRA slot per run that will share it."""
        if engine.serve != "lora" or engine.lora_slots < 1:
            raise ValueError("a shared engine serves each run from a LoRA slot: start it with serve='lora'")
        self.engine, self.lock = engine, threading.Lock()
        self.slots_taken = 0

    def slot(self, name: str) -> "EngineSlot":
        if self.slots_taken >= self.engine.lora_slots:
            raise ValueError(f"the engine has {self.engine.lora_slots} LoRA slots, all taken")
        self.slots_taken += 1
        # LoRA ids from 2 up: 1 is the engine's own policy slot (VLLMBackend.load_update), never used here.
        return EngineSlot(self, name, lora_id=self.slots_taken + 1)


class EngineSlot:
    """One run's view of the shared engine. Until its first update it serves the base weights."""

    def __init__(self, shared: SharedEngine, name: str, lora_id: int):
        self.shared, self.name, self.lora_id = shared, name, lora_id
        self.request = None  # this run's LoRARequest; None: the base weights
        self.version = 0

    @property
    def pad_id(self) -> int:
        return self.shared.engine.pad_id

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        with self.shared.lock:
            return self.shared.engine.generate(prompts, n, sampling, lora_requests=[self.request] * len(prompts),
                                               version=self.version)

    def load_update(self, update: AdapterUpdate) -> None:
        if update.kind != TrainMode.LORA:
            raise UserError(f"{self.name}: a shared engine serves LoRA adapters only; FullFT runs need their own "
                            "engine (compare runs them apart)")
        with self.shared.lock:
            self.request = self.shared.engine.adapter_request(update, self.name, self.lora_id)
        self.version = update.version

    def sleep(self) -> None:
        """Never: the other runs' slots sample while this run's learner trains."""

    def probe_logprobs(self, probe: Probe) -> list[float]:
        with self.shared.lock:
            return self.shared.engine.probe_logprobs(probe, self.request)
