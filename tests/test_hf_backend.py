"""The hf rollout backend on a real (tiny) Llama: batching, padding, the sampler's log-probs, and the static-cache
decode loop (the eager twin of the CUDA-graph one, tests/test_gpu.py) against the eager loop."""
import copy

import pytest
import torch

from rl_lora.errors import UserError

from rl_lora.sampling.hf import HFBackend, sample
from rl_lora.tokens import left_pad, tokenize_prompts
from rl_lora.types import SamplingParams

PROMPTS = ["Once upon a time", "The little dog ran to the park and saw", "Lily"]


def teacher_forced(model, tokenizer, prompt: str, completion_ids, temperature: float) -> torch.Tensor:
    """The reference: one unpadded row through a plain forward pass, full log-softmax."""
    prompt_ids = tokenize_prompts(tokenizer, [prompt])[0]
    ids = torch.tensor([prompt_ids + list(completion_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion_ids)[:, None]).squeeze(1)


def test_groups_shapes_and_versions(tiny_model):
    model, tokenizer = tiny_model
    backend = HFBackend(model, tokenizer, batch_size=4)
    groups = backend.generate(PROMPTS, 3, SamplingParams(temperature=1.0, max_new_tokens=12, seed=0))
    assert [len(g) for g in groups] == [3, 3, 3]
    for index, group in enumerate(groups):
        for completion in group:
            assert completion.prompt_index == index and completion.version == 0
            assert len(completion.token_ids) == len(completion.logprobs) <= 12
            assert all(lp <= 0 for lp in completion.logprobs)
            assert completion.finished == (completion.token_ids[-1] in backend.eos_ids)


def test_sampler_logprobs_equal_a_teacher_forced_forward(tiny_model):
    """Left padding, position ids and temperature must agree between sampling and a plain forward pass."""
    model, tokenizer = tiny_model
    backend = HFBackend(model, tokenizer, batch_size=16)
    for temperature in (1.0, 0.7):
        groups = backend.generate(PROMPTS, 2, SamplingParams(temperature=temperature, max_new_tokens=16, seed=1))
        for prompt, group in zip(PROMPTS, groups):
            for completion in group:
                expected = teacher_forced(model, tokenizer, prompt, completion.token_ids, temperature)
                torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_greedy_is_deterministic_and_batch_independent(tiny_model):
    model, tokenizer = tiny_model
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    batched = HFBackend(model, tokenizer, batch_size=8).generate(PROMPTS, 1, greedy)
    alone = [HFBackend(model, tokenizer).generate([p], 1, greedy)[0] for p in PROMPTS]
    assert [g[0].token_ids for g in batched] == [g[0].token_ids for g in alone]


def test_seeded_sampling_repeats(tiny_model):
    model, tokenizer = tiny_model
    sampling = SamplingParams(temperature=1.0, max_new_tokens=10, seed=7)
    first, second = (HFBackend(model, tokenizer).generate(PROMPTS, 2, sampling) for _ in range(2))
    assert [[c.token_ids for c in g] for g in first] == [[c.token_ids for c in g] for g in second]


def test_left_pad():
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]


def finishing_eos(tokenizer, eos_ids) -> list[int]:
    """EOS plus the 260K model's "." token: rows then finish within a few words, at different steps."""
    return list(eos_ids) + tokenizer(".", add_special_tokens=False)["input_ids"][-1:]


def decoded_both_ways(model, tokenizer, temperature: float, max_new_tokens: int = 21,
                      decodes: tuple[str, ...] = ("eager", "static")):
    """sample() through each decode loop, same seed, on the model's device: (tokens, logprobs, next draw) each,
    and each row's end. 21 tokens: two full chunks of CHECK_EVERY and a partial one."""
    backend = HFBackend(model, tokenizer)
    ids, mask = left_pad(tokenize_prompts(tokenizer, PROMPTS), backend.pad_id)
    eos = finishing_eos(tokenizer, backend.eos_ids)
    results = []
    for decode in decodes:
        generator = torch.Generator(backend.device).manual_seed(3)
        tokens, logprobs = sample(model, ids.to(backend.device), mask.to(backend.device), 3,
                                  SamplingParams(temperature, max_new_tokens, seed=3), eos, backend.pad_id,
                                  generator, decode)
        results.append((tokens.cpu(), logprobs.cpu(), torch.rand(1, generator=generator, device=backend.device)))
    is_eos = torch.isin(results[0][0], torch.tensor(eos))
    return results, torch.where(is_eos.any(1), is_eos.int().argmax(1), max_new_tokens)  # each row's end


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_the_static_cache_loop_samples_what_the_eager_loop_samples(tiny_model, temperature):
    """Same seed, same tokens and log-probs, and the generator left in the same state (the next batch of a call
    draws on from there); rows finish at different steps, so finished rows ride along in the static loop."""
    model, tokenizer = tiny_model
    (eager, static), ends = decoded_both_ways(model, tokenizer, temperature)
    assert len(set(ends.tolist())) > 1
    assert torch.equal(eager[0], static[0])
    torch.testing.assert_close(eager[1], static[1], atol=1e-4, rtol=1e-4)
    assert torch.equal(eager[2], static[2])


def test_the_static_cache_loop_serves_a_lora_adapter(tiny_model):
    """PEFT's wrapper passes the static cache through; a random (nonzero) adapter changes what is sampled."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_model
    torch.manual_seed(0)
    adapted = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj", "down_proj"],
                                                              init_lora_weights=False)).eval()
    (eager, static), _ = decoded_both_ways(adapted, tokenizer, 0.7)
    assert torch.equal(eager[0], static[0])
    torch.testing.assert_close(eager[1], static[1], atol=1e-4, rtol=1e-4)
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(adapted(input_ids=ids).logits, model(input_ids=ids).logits)


def test_backends_decoding_statically_return_the_same_completions(tiny_model):
    """Through generate: several batches share one generator, so both loops must draw from it alike."""
    model, tokenizer = tiny_model
    sampling = SamplingParams(temperature=1.0, max_new_tokens=12, seed=5)
    eager, static = (HFBackend(model, tokenizer, batch_size=4, decode=d).generate(PROMPTS, 2, sampling)
                     for d in ("eager", "static"))
    assert [[c.token_ids for c in g] for g in eager] == [[c.token_ids for c in g] for g in static]


def test_decode_modes_are_checked(tiny_model):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match="decode must be one of"):
        HFBackend(model, tokenizer, decode="fast")
    assert HFBackend(model, tokenizer)._decode_mode() == "eager"  # auto on a CPU
    with pytest.raises(UserError, match="rollout.hf_decode=graph captures CUDA graphs"):
        HFBackend(model, tokenizer, decode="graph").generate(PROMPTS[:1], 1, SamplingParams(max_new_tokens=2))


def test_sliding_window_models_decode_eagerly():
    """A sliding-window layer's cache is a ring buffer the static loop does not fill: refused, and auto on a GPU
    would take the eager loop."""
    from transformers import MistralConfig, MistralForCausalLM

    from rl_lora.sampling.hf import static_decoding_supported

    model = MistralForCausalLM(MistralConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1, sliding_window=4)).eval()
    assert not static_decoding_supported(model)
    ids, mask = left_pad([[1, 5, 6]], pad_id=0)
    with pytest.raises(UserError, match="sliding-window"):
        sample(model, ids, mask, 1, SamplingParams(0.0, 2), [2], 0, None, "static")
