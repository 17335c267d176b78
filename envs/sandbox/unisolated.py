"""env.sandbox=none: the program runs as you, in a child process with rlimits, its own process group and a temporary
working folder, with an empty environment. That contains mistakes (a loop, a huge allocation, endless output), not a
policy looking for a way to raise its reward: it can read your files, reach the network and signal your processes.
Only when named; the run says so in its first line and config.yaml."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from envs.sandbox.process import run_bounded, set_rlimits
from envs.sandbox.protocol import Limits, Outcome, Program


class UnisolatedSandbox:
    name = "none"
    isolated = False

    def check(self) -> None:
        pass

    def run(self, program: Program, limits: Limits = Limits()) -> Outcome:
        with tempfile.TemporaryDirectory(prefix="rl-lora-unisolated-") as folder:
            for name, content in program.files.items():
                (Path(folder) / name).write_bytes(content.encode() if isinstance(content, str) else content)
            if program.code is not None:
                (Path(folder) / "main.py").write_text(program.code)
                argv = [sys.executable, "-I", "main.py"]
            else:
                argv = list(program.argv)
            env = {"PYTHONIOENCODING": "utf-8", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": folder}
            return run_bounded(argv, limits, env=env, cwd=folder, stdin=program.stdin,
                               preexec_fn=lambda: set_rlimits(limits))

    def close(self) -> None:
        pass
