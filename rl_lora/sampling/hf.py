"""The reference rollout backend: a transformers model (+ PEFT adapter) and our own sampling loop.

The loop is ours rather than `model.generate` so the log-prob of each sampled token comes from exactly the
distribution it was drawn from (temperature applied once, no top-k/top-p filtering), and only one step's
full-vocabulary distribution is alive at a time.

Two ways to decode after the shared prefill (`decode=`):
- eager: a DynamicCache that grows by a column per token, finished rows leaving the batch. The faster one on a CPU
  (stories260K, 64 rows x 128 tokens: 0.6 s against the static loop's 0.9-1.2 s).
- static: a StaticCache sized for the whole call and fixed-shape tensors (finished rows ride along decoding pad),
  CHECK_EVERY tokens per `_StaticDecoder.chunk`. On CUDA ("graph") that chunk is captured once as a CUDA graph
  and replayed: per-token kernel launches from Python were the bottleneck there (0.3-0.4x `model.generate`).
Both draw their randomness identically (`_uniforms`, `_pick`), so for one seed they sample the same tokens.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.utils import parametrize

from rl_lora.config import TrainMode
from rl_lora.errors import UserError
from rl_lora.models import lora_parameters, probe_logprobs
from rl_lora.tokens import eos_token_ids, left_pad, pad_token_id, prompt_token_ids
from rl_lora.types import AdapterUpdate, Completion, Probe, SamplingParams

# Tokens the static loop decodes between two reads of "has every row finished?" (and how many tokens' randomness
# both loops draw at once). Each read is a device->host sync that stalls the GPU's queue, and a captured chunk is
# replayed as one launch; 8 keeps the steps wasted after the last row finishes (at most 7 of a batch that is done)
# small next to a typical completion.
CHECK_EVERY = 8
# "auto": graph on CUDA, eager elsewhere (on a CPU the eager loop is faster: no launch overhead to hide, and the
# static cache attends over its full length every step).
DECODE_MODES = ("auto", "eager", "static", "graph")


@torch.no_grad()
@parametrize.cached()  # a tiny adapter's B = U Σ R(v) (rl_lora.policy.tiny) computed once per call, not per token
def sample(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int, sampling: SamplingParams,
           eos_ids: list[int], pad_id: int, generator: torch.Generator | None,
           decode: str = "eager") -> tuple[torch.Tensor, torch.Tensor]:
    """Sample n completions per prompt row, up to max_new_tokens each. Returns (tokens, logprobs), each
    [prompts * n, steps], prompt-major; after a row's first EOS its tokens are pad and its log-probs 0.
    `decode`: "eager", "static" or "graph" (CUDA only), see the module docstring."""
    from transformers import DynamicCache

    if decode not in ("eager", "static", "graph"):
        raise ValueError(f"sample() decodes 'eager', 'static' or 'graph', not {decode!r}")

    # Under left padding each row's positions start at its first real token.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
    eos = torch.tensor(eos_ids, device=input_ids.device)
    # Each prompt is read once; its n completions share the prompt's keys and values from here on.
    logits, position = logits.repeat_interleave(n, dim=0), position_ids[:, -1:].repeat_interleave(n, dim=0) + 1
    if decode == "eager":
        cache.batch_repeat_interleave(n)
        tokens, logprobs, steps = _decode_eager(model, cache, logits, attention_mask.repeat_interleave(n, dim=0),
                                                position, sampling, eos, pad_id, generator)
    else:
        tokens, logprobs, steps = _decode_static(model, cache, n, logits, attention_mask, position, sampling, eos,
                                                 pad_id, generator, captured=decode == "graph")
    # A row that finished but rode along kept sampling: blank everything after its first EOS.
    finished_at = _first_eos(tokens[:, :steps], eos)
    after = torch.arange(steps, device=tokens.device)[None, :] > finished_at[:, None]
    return tokens[:, :steps].masked_fill(after, pad_id), logprobs[:, :steps].masked_fill(after, 0.0)


def _uniforms(generator: torch.Generator | None, rows: int, device: torch.device,
              temperature: float) -> torch.Tensor | None:
    """The randomness for the next CHECK_EVERY tokens, [CHECK_EVERY, rows]: one uniform per row and token, drawn
    for every row (finished ones too) in one call. Both decode loops draw exactly this, so they consume the
    generator identically; a CUDA graph reads it from a buffer instead of drawing inside the graph. None when
    greedy: nothing is drawn."""
    if temperature <= 0:
        return None
    return torch.rand((CHECK_EVERY, rows), generator=generator, device=device)


def _pick(logits: torch.Tensor, temperature: float, uniform: torch.Tensor | None) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's next token and its log-prob under the distribution it is drawn from: softmax(logits /
    temperature); at temperature 0 the argmax, with the untempered policy's log-prob.

    Sampled by inverse CDF from one uniform per row rather than torch.multinomial: the draw is then a pure
    function of (logits, uniform), which a CUDA graph can replay. On a CPU it is cheaper too: the default run's
    generate time was 0.85x multinomial's, side by side (benchmarks/default_run_gpu_issue_side_by_side.json)."""
    scaled = logits.float() / temperature if temperature > 0 else logits.float()
    logprobs = torch.log_softmax(scaled, dim=-1)
    greedy = logprobs.argmax(dim=-1)
    if uniform is None:
        return greedy, logprobs.gather(1, greedy[:, None]).squeeze(1)
    cdf = logprobs.exp().cumsum(dim=-1)
    # 1 - u lies in (0, 1], so the target is above 0 and at most the total: the first index whose cumulative
    # probability reaches it is a token of nonzero probability.
    token = torch.searchsorted(cdf, cdf[:, -1:] * (1 - uniform[:, None])).squeeze(1)
    token_logprobs = logprobs.gather(1, token[:, None]).squeeze(1)
    # A parallel cumsum (CUDA) need not be exactly monotone; never hand the learner a token of probability 0.
    impossible = torch.isneginf(token_logprobs)
    return (torch.where(impossible, greedy, token),
            torch.where(impossible, logprobs.gather(1, greedy[:, None]).squeeze(1), token_logprobs))


def _decode_eager(model, cache, logits: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor,
                  sampling: SamplingParams, eos: torch.Tensor, pad_id: int, generator: torch.Generator | None) \
        -> tuple[torch.Tensor, torch.Tensor, int]:
    """The per-token loop on a DynamicCache. Returns ([rows, max_new_tokens] tokens and log-probs, steps taken);
    columns past a row's first EOS hold whatever it sampled while riding along."""
    rows, device = logits.shape[0], logits.device
    tokens = torch.full((rows, sampling.max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((rows, sampling.max_new_tokens), device=device)
    active = torch.arange(rows, device=device)  # original row of each row still in the batch
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    steps, uniforms = 0, None
    for step in range(sampling.max_new_tokens):
        if step % CHECK_EVERY == 0:
            uniforms = _uniforms(generator, rows, device, sampling.temperature)
        token, token_logprobs = _pick(logits, sampling.temperature,
                                      None if uniforms is None else uniforms[step % CHECK_EVERY, active])
        tokens[active, step] = token
        logprobs[active, step] = token_logprobs
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
            attention_mask, position = attention_mask[keep], position[keep]
        logits = _forward(model, cache, token, position, attention_mask)
        position = position + 1
    return tokens, logprobs, steps


def _forward(model, cache, token: torch.Tensor, position: torch.Tensor, attention_mask: torch.Tensor) \
        -> torch.Tensor:
    """One decode step through the model: each row's next-token logits [rows, vocab]. The cache knows where its
    next column goes (a StaticLayer keeps that position as a device tensor, advanced in place)."""
    return model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position,
                 past_key_values=cache, use_cache=True).logits[:, -1, :]


def _decode_static(model, prefilled, n: int, logits: torch.Tensor, prompt_mask: torch.Tensor,
                   position: torch.Tensor, sampling: SamplingParams, eos: torch.Tensor, pad_id: int,
                   generator: torch.Generator | None, captured: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Decode in fixed shapes, CHECK_EVERY tokens per chunk (replayed as a CUDA graph when `captured`). Same
    contract as _decode_eager; the cache has room for whole chunks, so the last one may run past the limit."""
    chunks = -(-sampling.max_new_tokens // CHECK_EVERY)
    width, rows = prompt_mask.shape[1], logits.shape[0]
    cache = _static_cache(model, prefilled, n, width + chunks * CHECK_EVERY)
    # The mask covers the whole cache from the start: causality already hides the columns not yet written.
    mask = torch.cat([prompt_mask.repeat_interleave(n, dim=0),
                      prompt_mask.new_ones((rows, chunks * CHECK_EVERY))], dim=1)
    decoder = _StaticDecoder(model, cache, logits, mask, position, sampling.temperature, eos, pad_id)
    run = _graphed(decoder.chunk) if captured else decoder.chunk
    tokens = torch.full((rows, chunks * CHECK_EVERY), pad_id, dtype=torch.long, device=logits.device)
    logprobs = torch.zeros((rows, chunks * CHECK_EVERY), device=logits.device)
    for chunk in range(chunks):
        uniforms = _uniforms(generator, rows, logits.device, sampling.temperature)
        if uniforms is not None:
            decoder.uniforms.copy_(uniforms)
        run()
        columns = slice(chunk * CHECK_EVERY, (chunk + 1) * CHECK_EVERY)
        tokens[:, columns], logprobs[:, columns] = decoder.tokens.T, decoder.logprobs.T
        if decoder.done.all():  # the one device->host read per chunk
            break
    steps = min(sampling.max_new_tokens, int(_first_eos(tokens, eos).max()) + 1)
    return tokens, logprobs, steps


def static_decoding_supported(model) -> bool:
    """Every layer of `model` attends to its full past, so its cache can be a plain StaticCache (a sliding-window
    layer keeps a ring buffer whose copy from the prefill _static_cache does not do)."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    # Layers allocate lazily: building the cache only reads the config.
    return all(type(layer) is StaticLayer for layer in StaticCache(config=model.config, max_cache_len=1).layers)


def _static_cache(model, prefilled, n: int, length: int):
    """A StaticCache of `length` positions per row holding each prompt's prefilled keys and values for its n
    rows (prompt-major, as repeat_interleave), copied by broadcasting: the repeated prompt cache is never built.
    Full-attention layers only (static_decoding_supported)."""
    from transformers import StaticCache

    if not static_decoding_supported(model):
        raise UserError("rollout.hf_decode=static or graph handles full-attention layers only (this model has "
                        "sliding-window layers); use rollout.hf_decode=eager or auto")
    static = StaticCache(config=model.config, max_cache_len=length)
    for layer, source in zip(static.layers, prefilled.layers, strict=True):
        prompts, heads, width, _ = source.keys.shape
        # lazy_initialization reads only shapes, dtype and device: an expanded view allocates nothing.
        layer.lazy_initialization(source.keys[:1].expand(prompts * n, -1, -1, -1),
                                  source.values[:1].expand(prompts * n, -1, -1, -1))
        for static_states, states in ((layer.keys, source.keys), (layer.values, source.values)):
            per_prompt = static_states.view(prompts, n, heads, length, states.shape[-1])
            per_prompt[:, :, :, :width].copy_(states[:, None])
        layer.cumulative_length.fill_(width)
    return static


class _StaticDecoder:
    """Every tensor a decode chunk reads or writes, allocated once per call, so a CUDA graph captured from
    `chunk` replays against the same addresses. `chunk` itself is plain torch: the eager twin that runs on any
    device and that the CPU tests check against the eager loop."""

    def __init__(self, model, cache, logits: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor,
                 temperature: float, eos: torch.Tensor, pad_id: int):
        rows, device = logits.shape[0], logits.device
        self.model, self.cache, self.temperature, self.eos, self.pad_id = model, cache, temperature, eos, pad_id
        self.logits, self.attention_mask, self.position = logits, attention_mask, position  # read and updated
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)
        self.uniforms = torch.zeros((CHECK_EVERY, rows), device=device)  # refilled before each chunk
        self.tokens = torch.zeros((CHECK_EVERY, rows), dtype=torch.long, device=device)  # each chunk's output
        self.logprobs = torch.zeros((CHECK_EVERY, rows), device=device)

    def chunk(self) -> None:
        """CHECK_EVERY tokens for every row; a finished row decodes pad (log-prob 0) instead of leaving."""
        for i in range(CHECK_EVERY):
            token, token_logprobs = _pick(self.logits, self.temperature,
                                          self.uniforms[i] if self.temperature > 0 else None)
            token = token.masked_fill(self.done, self.pad_id)
            self.tokens[i].copy_(token)
            self.logprobs[i].copy_(token_logprobs.masked_fill(self.done, 0.0))
            self.done.logical_or_(torch.isin(token, self.eos))
            self.logits.copy_(_forward(self.model, self.cache, token, self.position, self.attention_mask))
            self.position.add_(1)


def _graphed(chunk: Callable[[], None]) -> Callable[[], None]:
    """`chunk` as a CUDA graph: the first call runs it eagerly on a side stream (lazy set-up such as cuBLAS
    workspaces must happen outside a capture), the second captures it (capturing runs nothing) and replays it,
    later calls replay: one launch per CHECK_EVERY tokens instead of hundreds per token. Captured per `sample`
    call, never kept: a tiny adapter's cached weights (parametrize.cached) live only as long as that call."""
    graph: torch.cuda.CUDAGraph | None | bool = None
    calls = 0

    def run() -> None:
        nonlocal graph, calls
        calls += 1
        if calls == 1:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                chunk()
            torch.cuda.current_stream().wait_stream(side)
            return
        if graph is None:
            graph = torch.cuda.CUDAGraph()
            try:
                # thread_local: other threads (side-by-side runs, rl_lora.run.shared_runs) may use the GPU meanwhile.
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    chunk()
            except RuntimeError as error:  # a model whose forward reads a value back to the host cannot be captured
                _warn_uncaptured(error)
                graph = False
        if graph is False:  # a failed capture ran nothing: the same chunk, uncaptured, from the same state
            chunk()
            return
        graph.replay()

    return run


def _warn_uncaptured(error: RuntimeError) -> None:
    import warnings

    warnings.warn(f"rollout.hf_decode=graph: this model's decode step could not be captured as a CUDA graph "
                  f"({str(error).splitlines()[0][:200]}); decoding with the static cache uncaptured", stacklevel=3)


def _first_eos(tokens: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """Index of each row's first EOS, or the row length when it has none."""
    is_eos = torch.isin(tokens, eos)
    no_eos = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=tokens.device)
    return torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), no_eos)


class HFBackend:
    """transformers + PEFT on any torch device."""

    def __init__(self, model, tokenizer, batch_size: int = 64, version: int = 0, shares_learner_model: bool = False,
                 decode: str = "auto"):
        """`shares_learner_model`: `model` is the in-process learner's own (one copy of the weights in memory, not
        two): every update is already in it, so load_update only takes its version. `decode`: one of
        DECODE_MODES (module docstring); "auto" captures the decode loop on CUDA and runs the eager loop elsewhere."""
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, not {decode!r}")
        self.decode = decode
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

    def _decode_mode(self) -> str:
        """The decode loop for the model's device now (the model may have moved since __init__)."""
        on_cuda = self.device.type == "cuda"
        if self.decode == "auto":
            return "graph" if on_cuda and static_decoding_supported(self.model) else "eager"
        if self.decode == "graph" and not on_cuda:
            raise UserError(f"rollout.hf_decode=graph captures CUDA graphs; this model is on {self.device} (use "
                            "static for the same loop uncaptured, or auto)")
        return self.decode

    def generate(self, prompts: list[str | tuple[int, ...]], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        self.model.eval()  # dropout off (a shared model comes back from the learner in train mode)
        prompt_ids = prompt_token_ids(self.tokenizer, prompts)
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        grouped: list[list[Completion]] = [[] for _ in prompts]
        prompts_per_batch, decode = max(1, self.batch_size // n), self._decode_mode()
        for first in range(0, len(prompts), prompts_per_batch):
            indices = range(first, min(first + prompts_per_batch, len(prompts)))
            ids, mask = left_pad([prompt_ids[i] for i in indices], self.pad_id)
            tokens, logprobs = sample(self.model, ids.to(self.device), mask.to(self.device), n, sampling,
                                      self.eos_ids, self.pad_id, generator, decode)
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
