"""The hf rollout backend on a real (tiny) Llama: batching, padding and the sampler's log-probs."""
import torch

from rl_lora.sampling.hf import HFBackend
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
