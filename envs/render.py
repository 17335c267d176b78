"""Turn a Sample's prompt into the exact text the model is conditioned on."""
from __future__ import annotations

from typing import Literal

from envs.errors import TaskError
from envs.sample import Sample

RenderMode = Literal["auto", "chat", "plain"]


class PromptRenderer:
    """`chat` wraps the prompt in the tokenizer's chat template (with the assistant turn opened);
    `plain` uses the prompt as is; `auto` picks chat when the tokenizer has a template."""

    def __init__(self, tokenizer, mode: RenderMode = "auto", system_prompt: str | None = None):
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if mode == "chat" and not has_template:
            raise TaskError("task.render=chat but this tokenizer has no chat template; use task.render=plain")
        self.use_chat = mode == "chat" or (mode == "auto" and has_template)
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt

    def __call__(self, sample: Sample) -> str:
        if isinstance(sample.prompt, str):
            if not self.use_chat:
                return sample.prompt
            messages = [{"role": "user", "content": sample.prompt}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
        else:  # chat messages, as a dataset gives them (TRL's and verl's formats): rendered as given
            messages = list(sample.prompt)
            if not self.use_chat:  # plain rendering, or a tokenizer without a template: the turns' text
                return "\n".join(m["content"] for m in messages)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
