"""completion_logprobs (shared prompt cache, chunked head) against a plain forward pass, values and gradients."""
import copy

import torch

from rl_lora.policy.logprobs import completion_logprobs
from rl_lora.tokens import tokenize_prompts
from rl_lora.types import Rollout, collate

PROMPTS = ["Once upon a time", "The little dog ran to the park and saw a big"]


def rollouts(tokenizer):
    prompt_ids = tokenize_prompts(tokenizer, PROMPTS)
    completions = [[(260, 300, 2), (270,)], [(280, 281, 282, 283), (290, 2), (301, 302, 303)]]
    return [Rollout(f"s{i}", tuple(prompt_ids[i]), c, (0.0,) * len(c), 0.0, 1.0, 0)
            for i, group in enumerate(completions) for c in group]


def reference(model, rollout_list, temperature):
    """Each row alone, unpadded, full log-softmax: no cache, no chunking, no sharing."""
    values = []
    for r in rollout_list:
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        logits = model(input_ids=ids).logits[0, len(r.prompt_ids) - 1:-1].float() / temperature
        values.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(r.completion_ids)[:, None]).squeeze(1))
    return values


def test_shared_prompt_matches_per_row_forward(tiny_model):
    model, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    assert batch.repeats.tolist() == [2, 3] and batch.prompt_ids.shape[0] == 2
    with torch.no_grad():
        shared, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.repeats,
                                        batch.completion_ids, batch.completion_mask, 0.7, chunk_tokens=3)
        expected = reference(model, rollouts(tokenizer), 0.7)
    for row, values in enumerate(expected):
        torch.testing.assert_close(shared[row, :len(values)], values, atol=1e-5, rtol=1e-5)


def test_gradients_through_the_shared_prompt(tiny_model):
    model, tokenizer = tiny_model
    shared_model, plain_model = copy.deepcopy(model), copy.deepcopy(model)
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    lp, _ = completion_logprobs(shared_model, batch.prompt_ids, batch.prompt_mask, batch.repeats,
                                batch.completion_ids, batch.completion_mask)
    (lp * batch.completion_mask).sum().backward()
    sum(values.sum() for values in reference(plain_model, rollouts(tokenizer), 1.0)).backward()
    for (name, a), b in zip(shared_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_split_keeps_groups_whole(tiny_model):
    _, tokenizer = tiny_model
    batch = collate(rollouts(tokenizer), pad_id=tokenizer.pad_token_id)
    parts = batch.split(2)
    assert [p.repeats.tolist() for _, p in parts] == [[2], [3]]
    assert [(r.start, r.stop) for r, _ in parts] == [(0, 2), (2, 5)]
    assert [p.completion_ids.shape[1] for _, p in parts] == [3, 4]  # each trimmed to its own longest completion
    assert parts[0][1].prompt_ids.shape[1] == len(tokenize_prompts(tokenizer, PROMPTS[:1])[0])  # and its prompt
    assert [p.repeats.tolist() for _, p in batch.split(64)] == [[2, 3]]
