"""The reference rollout backend: a transformers model (+ PEFT adapter) and a plain sampling loop.

The loop is ours rather than `model.generate` so the log-prob of each sampled token comes from exactly the
distribution it was drawn from (temperature applied once, no top-k/top-p filtering), and only one step's
full-vocabulary distribution is alive at a time.
"""
from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from rl_lora.config import TrainMode
from rl_lora.models import lora_parameters, probe_logprobs
from rl_lora.tokens import eos_token_ids, left_pad, pad_token_id, tokenize_prompts
from rl_lora.types import AdapterUpdate, Completion, Probe, SamplingParams


@torch.no_grad()
@parametrize.cached()  # a tiny adapter's B = U Σ R(v) (rl_lora.policy.tiny) computed once per call, not per token
def sample(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int, sampling: SamplingParams,
           eos_ids: list[int], pad_id: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample n completions per prompt row, up to max_new_tokens each. Returns (tokens, logprobs), each
    [prompts * n, steps], prompt-major; after a row's first EOS its tokens are pad and its log-probs 0."""
    from transformers import DynamicCache

    rows, device = input_ids.shape[0] * n, input_ids.device
    tokens = torch.full((rows, sampling.max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((rows, sampling.max_new_tokens), device=device)
    # Under left padding each row's positions start at its first real token.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
    # Each prompt is read once; its n completions share the prompt's KV cache from here on.
    cache.batch_repeat_interleave(n)
    logits, attention_mask = logits.repeat_interleave(n, dim=0), attention_mask.repeat_interleave(n, dim=0)
    next_position = position_ids[:, -1:].repeat_interleave(n, dim=0) + 1
    eos = torch.tensor(eos_ids, device=device)
    active = torch.arange(rows, device=device)  # original row of each row still in the batch
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    steps = 0
    for step in range(sampling.max_new_tokens):
        scaled = logits.float() / sampling.temperature if sampling.temperature > 0 else logits.float()
        step_logprobs = torch.log_softmax(scaled, dim=-1)
        if sampling.temperature > 0:
            token = torch.multinomial(step_logprobs.exp(), 1, generator=generator).squeeze(1)
        else:
            token = step_logprobs.argmax(dim=-1)
        tokens[active, step] = token
        logprobs[active, step] = step_logprobs.gather(1, token[:, None]).squeeze(1)
        steps = step + 1
        done |= torch.isin(token, eos)
        if done.all():
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=1)
        # Finished rows leave the batch (and the KV cache) once they are a quarter of it, so the long tail of a
        # few verbose rows costs those rows' compute, not the whole batch's. Until then they ride along.
        if done.sum() * 4 >= len(active):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, token, done = active[keep], token[keep], done[keep]
            attention_mask, next_position = attention_mask[keep], next_position[keep]
        logits = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=next_position,
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
        next_position = next_position + 1
    # A row that finished but rode along kept sampling: blank everything after its first EOS.
    finished_at = _first_eos(tokens[:, :steps], eos)
    after = torch.arange(steps, device=device)[None, :] > finished_at[:, None]
    return tokens[:, :steps].masked_fill(after, pad_id), logprobs[:, :steps].masked_fill(after, 0.0)


def _first_eos(tokens: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """Index of each row's first EOS, or the row length when it has none."""
    is_eos = torch.isin(tokens, eos)
    no_eos = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=tokens.device)
    return torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), no_eos)


class HFBackend:
    """transformers + PEFT on any torch device."""

    def __init__(self, model, tokenizer, batch_size: int = 64, version: int = 0, shares_learner_model: bool = False):
        """`shares_learner_model`: `model` is the in-process learner's own (one copy of the weights in memory, not
        two): every update is already in it, so load_update only takes its version."""
        self.shares_learner_model = shares_learner_model
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.version = version
        self.eos_ids = eos_token_ids(tokenizer, getattr(model, "generation_config", None))
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)

    def sleep(self) -> None:
        """Nothing to give back: generate() keeps no KV cache between calls."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        self.model.eval()  # dropout off (a shared model comes back from the learner in train mode)
        prompt_ids = [tuple(ids) for ids in tokenize_prompts(self.tokenizer, prompts)]
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        grouped: list[list[Completion]] = [[] for _ in prompts]
        prompts_per_batch = max(1, self.batch_size // n)
        for first in range(0, len(prompts), prompts_per_batch):
            indices = range(first, min(first + prompts_per_batch, len(prompts)))
            ids, mask = left_pad([prompt_ids[i] for i in indices], self.pad_id)
            tokens, logprobs = sample(self.model, ids.to(self.device), mask.to(self.device), n, sampling,
                                      self.eos_ids, self.pad_id, generator)
            for row, (row_tokens, row_logprobs) in enumerate(zip(tokens.tolist(), logprobs.tolist())):
                prompt_index = indices[row // n]
                grouped[prompt_index].append(
                    self._completion(prompt_index, prompt_ids[prompt_index], row_tokens, row_logprobs))
        return grouped

    def _completion(self, prompt_index: int, prompt_ids: tuple[int, ...], tokens: list[int],
                    logprobs: list[float]) -> Completion:
        end = next((i + 1 for i, t in enumerate(tokens) if t in self.eos_ids), len(tokens))
        return Completion(
            prompt_index=prompt_index,
            prompt_ids=prompt_ids,
            token_ids=tuple(tokens[:end]),
            logprobs=tuple(logprobs[:end]),
            text=self.tokenizer.decode(tokens[:end], skip_special_tokens=True),
            finished=end > 0 and tokens[end - 1] in self.eos_ids,
            version=self.version,
        )

    def probe_logprobs(self, probe: Probe) -> list[float]:
        self.model.eval()
        return probe_logprobs(self.model, probe)

    def load_update(self, update: AdapterUpdate) -> None:
        if self.shares_learner_model:
            self.version = update.version
            return
        with torch.no_grad():
            if update.kind == TrainMode.FULL:
                self.model.load_state_dict(update.tensors, strict=True)
            else:
                targets = self._adapter_parameters(update)
                for key, tensor in update.tensors.items():
                    targets[key].copy_(tensor)
        self.version = update.version

    def _adapter_parameters(self, update: AdapterUpdate) -> dict[str, torch.Tensor]:
        """The first adapter builds the PEFT wrapper; every version after it is copied into the same tensors."""
        if not hasattr(self.model, "peft_config"):
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(**update.lora_config)).eval()
            self._lora = lora_parameters(self.model)
        if set(update.tensors) != set(self._lora):
            unknown = sorted(set(update.tensors) - set(self._lora)) or sorted(set(self._lora) - set(update.tensors))
            raise ValueError(f"adapter update does not match this sampler's adapter (e.g. {unknown[:2]}); "
                             "was it made for another model, rank or target_modules?")
        return self._lora
