"""Environments as a user would write them, named `tests.env_fixtures:...` in the tests."""
from envs.environment import StepResult, prompt_messages

# A ChatML-like template for the 260K story model's tokenizer (which has none): every role, </s> ends a turn.
TEMPLATE = ("{% for m in messages %}{{ '<s>' if loop.first else '' }}[{{ m['role'] }}] {{ m['content'] }}</s>\n"
            "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")


class ThreeTurns:
    """Answers the first two assistant turns with a tool message, ends the episode after the third; each turn is
    worth 0.5 if it mentions "the"."""

    def reset(self, sample):
        self.turn = 0
        return prompt_messages(sample)

    def step(self, assistant_text):
        self.turn += 1
        reward = 0.5 * ("the" in assistant_text)
        if self.turn == 3:
            return StepResult(done=True, reward=reward)
        return StepResult([{"role": "tool", "content": f"result {self.turn}: seven"}], reward=reward)


class NotAnEnvironment:
    def reset(self, sample):
        return []


# Environments that break the protocol, each its own way (the checked boundary's tests name them).
class ResetRaises(ThreeTurns):
    def reset(self, sample):
        raise KeyError("no such level")


class StepRaises(ThreeTurns):
    def step(self, assistant_text):
        raise ZeroDivisionError("division by zero\nin the scorer")


class ResetReturnsText(ThreeTurns):
    def reset(self, sample):
        return sample.prompt


class StepReturnsDict(ThreeTurns):
    def step(self, assistant_text):
        return {"messages": [], "done": True}


class IntContent(ThreeTurns):
    def step(self, assistant_text):
        return StepResult([{"role": "tool", "content": 7}])


class NaNReward(ThreeTurns):
    def step(self, assistant_text):
        return StepResult([{"role": "tool", "content": "ok"}], reward=float("nan"))


class FailsOnOdd(ThreeTurns):
    """Fine on every sample but those whose id ends in an odd digit."""

    def reset(self, sample):
        self.sample = sample
        return super().reset(sample)

    def step(self, assistant_text):
        if self.sample.id[-1] in "13579":
            raise RuntimeError("an odd sample")
        return super().step(assistant_text)
