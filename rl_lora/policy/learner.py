"""The trainable policy: PEFT LoRA on every linear layer (or all weights), one optimizer step per RL step."""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch

from rl_lora.config import AlgoConfig, LoraConfig, TrainMode
from rl_lora.errors import UserError
from rl_lora.memory import CPU_MMAP_THRESHOLD, return_large_frees_to_the_os
from rl_lora.models import cache_root, lora_parameters, probe_logprobs, write_adapter
from rl_lora.policy.logprobs import batch_logprobs, causal_lm_of, compile_layers, enable_layer_checkpointing
from rl_lora.policy.micro_batches import MicroBatchSizer, count_saved
from rl_lora.policy.losses import policy_loss, token_weights
from rl_lora.policy.tiny import TinyAdapter, tiny_peft_model
from rl_lora.types import AdapterUpdate, Batch, LearnMetrics, Probe


def peft_lora_config(lora: LoraConfig) -> dict:
    targets = lora.target_modules if lora.target_modules == "all-linear" else \
        [m.strip() for m in lora.target_modules.split(",") if m.strip()]
    # B starts at zero (PEFT's default init), so the adapted model starts exactly at the base model.
    config = {"r": lora.rank, "lora_alpha": lora.alpha, "target_modules": targets, "lora_dropout": lora.dropout,
              "init_lora_weights": True, "bias": "none", "task_type": "CAUSAL_LM"}
    if lora.adapter == "dora":
        config["use_dora"] = True
    return config


def dithered_bf16(values: torch.Tensor, seed: int) -> torch.Tensor:
    """fp32 -> bf16, rounded up or down with the probability that keeps it unbiased (stochastic rounding), where
    the random bits are fixed per weight (drawn from `seed`, the same every step). Rounding to nearest instead
    would hold a bf16 weight until its fp32 master has moved half a bf16 step: after 5 steps at LR 1e-5, 94% of
    SmolLM2's bf16 weights had not moved and its reward rose at half fp32's pace (benchmarks/mixed_precision.json).
    Dithered, a share of weights proportional to the drift moves each step, so the bf16 model follows the fp32 one
    on average; fixed bits keep a weight still while its master is still (no step-to-step jitter), keep it within
    one bf16 step of its master, and make a resume exact. A weight on the bf16 grid stays exactly itself."""
    generator = torch.Generator(device=values.device).manual_seed(seed)
    noise = torch.randint(0, 1 << 16, values.shape, dtype=torch.int32, generator=generator, device=values.device)
    bits = values.detach().float().contiguous().view(torch.int32)
    # bf16 is fp32's upper 16 bits: add random low bits, then drop them.
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


def update_parts(batch: Batch, updates: int) -> list[Batch]:
    """The step's groups in `updates` consecutive parts of whole groups, as even as the count allows (PPO's
    mini-batches: one optimizer step each)."""
    if updates <= 1:
        return [batch]
    group_ends = [0] + batch.repeats.cumsum(0).tolist()
    groups = len(batch.repeats)
    cuts = [group_ends[round(k * groups / updates)] for k in range(updates + 1)]
    return [batch.select(first, last) for first, last in zip(cuts, cuts[1:]) if last > first]


class LocalLearner:
    """The Learner protocol (rl_lora.types) in this process; on Ray, a LearnerWorker actor holds one."""

    def __init__(self, model, lora: LoraConfig, algo: AlgoConfig, lr: float, temperature: float = 1.0,
                 seed: int = 0, max_new_tokens: int | None = None):
        # The policy is the tempered distribution the sampler draws from: the learner scores tokens under the
        # same temperature, or the importance ratio is off by the temperature alone (KL ~0.07 nats/token at 0.7).
        self.lora, self.algo, self.temperature = lora, algo, temperature
        self.max_new_tokens = max_new_tokens  # algo.normalization=constant's divisor (unset: the batch's width)
        self.tiny: TinyAdapter | None = None
        if lora.mode == TrainMode.LORA:
            from peft import LoraConfig as PeftLoraConfig
            from peft import get_peft_model

            torch.manual_seed(seed)  # A's random init
            self.lora_config = peft_lora_config(lora)
            if lora.adapter == "tiny":  # a rank-r PEFT LoRA whose B is a function of U numbers
                model, self.tiny = tiny_peft_model(model, self.lora_config, lora, seed, cache_root())
                self.lora_config = self.tiny.lora_config(self.lora_config)
            else:
                model = get_peft_model(model, PeftLoraConfig(**self.lora_config))
            self._lora = lora_parameters(model)
        else:
            self.lora_config = None  # FullFT with a KL term is refused by RunConfig.check: no reference copy
        if algo.gradient_checkpointing:
            enable_layer_checkpointing(model)
        compile_backend = {"auto": "inductor" if next(model.parameters()).is_cuda else None,
                           "off": None}.get(algo.compile, algo.compile)
        self.compiled = compile_layers(model, compile_backend) if compile_backend else 0
        self.model = model
        self.model.train()
        if not next(model.parameters()).is_cuda:  # process-wide: the in-process sampler's buffers are served alike
            return_large_frees_to_the_os(CPU_MMAP_THRESHOLD)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # Mixed precision. LoRA: PEFT keeps the adapter in fp32 over a bf16/fp16 base, so AdamW and its state are
        # fp32 already. FullFT on bf16/fp16 weights: an update of 1e-5 x a weight of 1e-2 is below bf16's
        # resolution (8 mantissa bits) and would round away, so AdamW steps fp32 master copies, and the model (what
        # computes, and what the samplers get) holds them rounded without bias (dithered_bf16).
        self.seed = seed
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params] \
            if any(p.dtype != torch.float32 for p in self.params) else None
        self._new_optimizer(self.master or self.params, lr)
        # Micro-batches by memory unless a count or a token budget is set (rl_lora.policy.micro_batches).
        self.sizer = MicroBatchSizer(causal_lm_of(model), algo.learner_memory_mb) \
            if algo.micro_batch_size is None and algo.micro_batch_tokens is None else None
        self.vocabulary = causal_lm_of(model).get_output_embeddings().weight.shape[0]
        self.chunk_tokens: int | None = None  # logits chunk positions (None: logprobs' fixed ~8 MB chunks)
        self.version = 0
        self.parallel = None  # a DataParallel once this learner joins a group of N (rl_lora.cluster.actors)

    def join_data_parallel(self, rank: int, world_size: int) -> None:
        from rl_lora.policy.data_parallel import DataParallel

        sharded = self.lora_config is None
        self.parallel = DataParallel(self.model, self.temperature, rank, world_size, sharded,
                                     reduce_in_fp32=self.master is not None,
                                     entropy_grad=self.algo.entropy_coef > 0)
        if sharded:  # the parameters are now this rank's shards: the optimizer steps those
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            if self.master is not None:  # bf16/fp16: fp32 masters of this rank's shards only, as sharded as the rest
                self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
            self._new_optimizer(self.master or self.params, self.optimizer.param_groups[0]["lr"])

    def _new_optimizer(self, params: list, lr: float) -> None:
        """AdamW over `params` with the warm-up schedule."""
        # One fused kernel for all tensors (a loop of ~10 small kernels per tensor otherwise: ~4,200 for the default
        # rank-1 adapter's 420 tensors). Sharded parameters (DTensors, with to_local) take the foreach path.
        fused = not any(hasattr(p, "to_local") for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=self.algo.weight_decay,
                                           fused=fused or None, foreach=None if fused else True)
        warmup = self.algo.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def update_bytes(self) -> int:
        """What one sync sends: the adapter's tensors (a tiny adapter: its rank-r LoRA), or every weight."""
        if self.tiny:
            return self.tiny.exported_bytes
        tensors = self._lora.values() if self.lora_config is not None else self.model.parameters()
        return sum(t.numel() * t.element_size() for t in tensors)  # sharded: numel is the whole tensor's

    @property
    def state_bytes(self) -> int:
        """This learner's parameters, gradients, optimizer state and fp32 masters, counted exactly (this rank's
        shards where sharded): what sharding divides, apart from activations and the allocator."""
        def local(t: torch.Tensor) -> torch.Tensor:
            return t.to_local() if hasattr(t, "to_local") else t

        tensors = [local(p) for p in self.model.parameters()]
        tensors += [local(p.grad) for p in self.params + list(self.master or ()) if p.grad is not None]
        tensors += [local(v) for state in self.optimizer.state.values() for v in state.values()
                    if isinstance(v, torch.Tensor) and v.dim() > 0]
        tensors += [local(m) for m in self.master or ()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def step(self, batch: Batch) -> LearnMetrics:
        """One RL step's learning: algo.updates_per_step optimizer steps, each on its share of the groups (after the
        first, the policy has moved away from the sampler's, so r != 1 and the losses' clips act)."""
        start = time.perf_counter()
        self.model.train()  # an in-process hf sampler sharing this model switches it to eval mode to sample
        totals, grad_norms, passes = {}, [], 0
        for part in update_parts(batch, self.algo.updates_per_step):
            part_totals, grad_norm, part_passes = self._update(part)
            totals = {key: totals.get(key, 0.0) + value for key, value in part_totals.items()}
            grad_norms.append(grad_norm)
            passes += part_passes
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()  # the LR schedule counts RL steps, whatever the updates per step
        self.version += 1
        tokens = int(batch.trained_mask.sum().item())  # the policy's own tokens (not tool output)
        return LearnMetrics(
            loss=totals["loss"] / len(grad_norms), grad_norm=sum(grad_norms) / len(grad_norms),
            sampler_kl=totals["sampler_kl"] / max(tokens, 1),
            base_kl=totals["base_kl"] / max(tokens, 1), clip_fraction=totals["clipped"] / max(tokens, 1),
            entropy=totals["entropy"] / max(tokens, 1), tokens=tokens, seconds=time.perf_counter() - start,
            learning_rate=learning_rate, micro_batches=passes,
            is_corrected_fraction=totals["corrected"] / max(tokens, 1))

    def _update(self, batch: Batch) -> tuple[dict[str, float], float, int]:
        """One optimizer step on `batch`: its summed metrics, the gradient norm and the passes it took."""
        device = self.params[0].device  # the batch is split on the CPU; each micro-batch goes where the model is
        # Token weights over the whole batch: with N learners each rank's loss is its share of the one loss.
        weights = token_weights(batch.trained_mask, self.algo.normalization, self.max_new_tokens).to(device)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.zero_grad(set_to_none=True)
        first, last = self.parallel.share(batch) if self.parallel else (0, batch.rows)
        if first == last:
            raise UserError(f"a step with {len(batch.repeats)} groups for {self.parallel.world_size} learners: "
                            "each learner needs a group; raise rollout.prompts_per_step or lower ray.num_learners")
        micro_batches = self._micro_batches(batch.select(first, last), device)
        # The metrics stay on the device and are read once, after the last pass: a read-back per pass would make the
        # host wait for the device that many times a step.
        # loss, clipped, sampler KL, base KL, entropy, tokens the mismatch correction changed
        totals = torch.zeros(6, dtype=torch.float64, device=device)
        for index, (rows, micro) in enumerate(micro_batches):
            micro = micro.to(device)
            # N learners: DDP all-reduces the gradients in the share's last backward pass only.
            last_pass = index == len(micro_batches) - 1
            # The first pass of each step measures what autograd saves (a hook per saved tensor: not every pass).
            saved, measure = [0], self.sizer is not None and index == 0
            with self.parallel.accumulating(last_pass) if self.parallel else nullcontext(), \
                    count_saved(self.model, saved) if measure else nullcontext():
                logprobs, entropy = self.parallel.forward(micro, self.chunk_tokens) if self.parallel else \
                    batch_logprobs(self.model, micro, self.temperature, self.chunk_tokens,
                                   entropy_grad=self.algo.entropy_coef > 0)
                base_logprobs = self._base_logprobs(micro) if self.algo.kl_coef > 0 else None
                micro_weights = weights[first + rows.start:first + rows.stop, :micro.completion_ids.shape[1]]
                terms = policy_loss(self.algo.loss, logprobs, micro.sampler_logprobs, micro.advantages,
                                    micro.trained_mask, micro_weights, clip_eps=self.algo.clip_low,
                                    clip_eps_high=self.algo.clip_eps_high, clip_ratio_c=self.algo.clip_ratio_c,
                                    base_logprobs=base_logprobs, kl_coef=self.algo.kl_coef,
                                    kl_estimator=self.algo.kl_estimator, is_correction=self.algo.is_correction,
                                    kl_in=self.algo.kl_in, is_cap=self.algo.is_cap,
                                    is_bounds=(self.algo.is_mask_low, self.algo.is_mask_high),
                                    entropy=entropy, entropy_coef=self.algo.entropy_coef)
                # DDP averages over ranks; the ranks' losses are parts of one sum.
                (terms.loss * (self.parallel.world_size if self.parallel else 1)).backward()
            if measure:
                self.sizer.observe(saved[0], micro.tokens())
            totals += torch.stack([terms.loss.detach(), terms.clipped_tokens, terms.sampler_kl_sum,
                                   terms.base_kl_sum, (entropy.detach() * micro.trained_mask).sum(),
                                   terms.corrected_tokens]).double()
        totals = dict(zip(("loss", "clipped", "sampler_kl", "base_kl", "entropy", "corrected"), totals.tolist()))
        if self.parallel:
            totals = self.parallel.sum_over_ranks(totals)
        if self.master is not None:
            for master, param in zip(self.master, self.params):
                master.grad, param.grad = param.grad.float(), None
        stepped = self.master or self.params
        max_norm = self.algo.max_grad_norm if self.algo.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(stepped, max_norm).item()
        self.optimizer.step()
        self._copy_master_to_model()
        return totals, grad_norm, len(micro_batches)

    def _micro_batches(self, share: Batch, device: torch.device) -> list[tuple[slice, Batch]]:
        """This step's passes: by algo.micro_batch_tokens or algo.micro_batch_size when set, else as many whole
        groups per pass as the memory budget holds (rl_lora.policy.micro_batches)."""
        algo = self.algo
        if algo.micro_batch_tokens is not None or algo.micro_batch_size is not None:
            return share.split(algo.micro_batch_size, algo.micro_batch_tokens)
        widest_prompt = int(share.prompt_mask.sum(1).max())
        smallest = widest_prompt + int(share.completion_mask.sum(1).max())
        # Still to be allocated this step: the gradients, and AdamW's two moments before its first step.
        trainable = sum(p.numel() for p in self.master or self.params) * 4
        pending = trainable * (1 if self.optimizer.state else 3)
        budget = self.sizer.token_budget(device, pending, smallest)
        if self.parallel:  # every rank cuts by the same budget: FSDP's passes are collectives, in step
            budget = int(self.parallel.min_over_ranks(budget))
        self.chunk_tokens = self.sizer.logits_chunk_tokens(self.vocabulary)
        return share.split(max_tokens=budget, whole_groups=True, pack_tokens=self.sizer.pack_tokens(device))

    @torch.no_grad()
    def _copy_master_to_model(self) -> None:
        rank = self.parallel.rank if self.parallel else 0
        for index, (master, param) in enumerate(zip(self.master or (), self.params)):
            if hasattr(param, "to_local"):  # sharded: this rank's part of the weight, from its part of the master
                master, param = master.to_local(), param.to_local()
            if param.dtype == torch.bfloat16:  # each rank's shard gets its own fixed bits
                param.copy_(dithered_bf16(master, seed=self.seed * 1_000_003 + index + 7_919 * rank))
            else:  # fp16: round to nearest
                param.copy_(master)

    @torch.no_grad()
    def _base_logprobs(self, batch: Batch) -> torch.Tensor:
        # The base model is the same network with the adapter switched off: no second copy in memory.
        with self.model.disable_adapter():
            logprobs, _ = batch_logprobs(self.model, batch, self.temperature)
        return logprobs

    def probe_logprobs(self, probe: Probe) -> list[float]:
        """What every sampler must reproduce after a sync (eval mode: LoRA dropout off, as in the samplers)."""
        self.model.eval()
        try:
            with self.parallel.gathered() if self.parallel else nullcontext():
                return probe_logprobs(self.model, probe)
        finally:
            self.model.train()

    def export_update(self) -> AdapterUpdate:
        """The adapter as a CPU copy (kB: it crosses processes and devices as it is). FullFT weights stay where they
        are, uncopied: whoever receives them copies them (load_state_dict, vLLM's weight push), and a Ray learner
        moves them to the CPU first (LearnerWorker.export_update)."""
        if self.lora_config is None:
            state = self.parallel.full_state_dict() if self.parallel else self.model.state_dict()
            weights = {k: v.detach() for k, v in state.items()}  # sharded: rank 0's, whole; {} elsewhere
            return AdapterUpdate(self.version, TrainMode.FULL, weights)
        tensors = self.tiny.tensors() if self.tiny else \
            {key: parameter.detach().to("cpu", copy=True) for key, parameter in self._lora.items()}
        return AdapterUpdate(self.version, TrainMode.LORA, tensors, dict(self.lora_config))

    # -- checkpoints --------------------------------------------------------------------------------------
    def save_weights(self, folder) -> None:
        """LoRA: a PEFT adapter folder (`PeftModel.from_pretrained` loads it); FullFT: a HF model folder. Sharded
        over N learners: every rank takes part in the gather, rank 0 writes."""
        if self.parallel and self.parallel.sharded:
            weights = self.parallel.full_state_dict()
            if self.parallel.rank == 0:
                self.model.save_pretrained(folder, state_dict=weights)
            return
        if self.tiny:  # the exported rank-r LoRA, as a PEFT folder; the U numbers go with the optimizer state
            write_adapter(folder, self.export_update(), self.model.base_model.model.name_or_path)
            return
        self.model.save_pretrained(folder)

    def optimizer_state(self) -> dict:
        """AdamW's state_dict (index-keyed, as torch writes it) with every tensor whole: sharded, each shard is
        gathered to rank 0's CPU (a collective). One format whatever the group, so a checkpoint written by N
        learners resumes with any other N."""
        sharded = bool(self.parallel and self.parallel.sharded)
        whole = self.parallel.whole if sharded else (lambda value: value)
        state = {"optimizer": whole(self.optimizer.state_dict()), "scheduler": self.scheduler.state_dict(),
                 "version": self.version, "sharded": sharded}
        if self.tiny:
            state["tiny_vectors"] = self.tiny.state()
        if self.sizer and self.sizer.measured_per_token is not None:  # a resume cuts its passes as this run did
            state["activation_bytes_per_token"] = self.sizer.measured_per_token
        if self.master is not None:  # the saved weights are rounded; a resume goes on from the fp32 masters
            state["master_weights"] = whole([m.detach() for m in self.master]) if sharded else \
                [m.detach().cpu() for m in self.master]
        return state

    def load_state(self, update: AdapterUpdate, optimizer_state: dict) -> None:
        """Sharded, each rank takes its shards of the whole weights, masters and AdamW state."""
        sharded = bool(self.parallel and self.parallel.sharded)
        if update.kind == TrainMode.FULL and sharded:
            self.parallel.load_full_state(update.tensors)
        elif update.kind == TrainMode.FULL:
            # save_pretrained leaves out tied weights (lm_head = embeddings): only those may be missing.
            result = self.model.load_state_dict(update.tensors, strict=False)
            tied = {k for k in result.missing_keys if k.endswith("lm_head.weight")}
            if result.unexpected_keys or set(result.missing_keys) - tied:
                raise UserError(f"checkpoint does not match the model: missing {result.missing_keys[:3]}, "
                                f"unexpected {result.unexpected_keys[:3]}")
        elif self.tiny:  # the U numbers; the adapter folder's B = U_r S_r R(v) follows from them
            if "tiny_vectors" not in optimizer_state:
                raise UserError("this checkpoint has no tiny adapter state: it was not written by a "
                                "lora.adapter=tiny run")
            self.tiny.load(optimizer_state["tiny_vectors"])
        else:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, update.tensors)
        if self.master is not None:
            with torch.no_grad():
                saved = optimizer_state.get("master_weights")
                for master, param, value in zip(self.master, self.params, saved or [None] * len(self.master)):
                    if value is None:  # a checkpoint without masters: from the (rounded) weights
                        master.copy_(param)
                    else:
                        master.copy_(self.parallel.shard_like(value, master) if sharded else value)
            self._copy_master_to_model()
        optimizer = optimizer_state["optimizer"]
        if sharded and any(isinstance(key, str) for key in optimizer["state"]):
            self.parallel.load_named_optimizer_state(self.optimizer, optimizer)  # named by DCP (before 2026-12)
        else:
            stepped = self.master or self.params
            self.optimizer.load_state_dict(self.parallel.shard_state(optimizer, stepped) if sharded else optimizer)
        self.scheduler.load_state_dict(optimizer_state["scheduler"])
        if self.sizer and "activation_bytes_per_token" in optimizer_state:
            self.sizer.measured_per_token = optimizer_state["activation_bytes_per_token"]
        self.version = optimizer_state["version"]
