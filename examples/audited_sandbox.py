"""A sandbox backend of your own: `--set env.sandbox=examples.audited_sandbox:audited`.

A factory takes `python_packages` and returns an envs.sandbox.Sandbox (run, check, close, `isolated`). This one wraps
the bwrap backend (a container service or a remote sandbox would put its own client here) with tighter limits and
an audit log of every program the model ran."""
import json
import os

from envs.sandbox import Limits, Outcome, Program, open_sandbox


class AuditedSandbox:
    name, isolated = "audited", True

    def __init__(self, inner, log_path):
        self.inner, self.log_path = inner, log_path

    def check(self):
        self.inner.check()  # fail closed: raise SandboxUnavailable when the boundary cannot be made

    def run(self, program: Program, limits: Limits = Limits()) -> Outcome:
        outcome = self.inner.run(program, Limits(wall_s=min(limits.wall_s, 3.0), memory_mb=256))
        with open(self.log_path, "a") as log:
            log.write(json.dumps({"code": program.code, "exit": outcome.exit_code, "limit": outcome.limit}) + "\n")
        return outcome

    def close(self):
        self.inner.close()


def audited(python_packages=()):
    return AuditedSandbox(open_sandbox("bwrap", python_packages), os.environ.get("SANDBOX_AUDIT", "sandbox.jsonl"))
