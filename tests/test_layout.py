"""The architecture, checked: layers import only downwards, the RL step knows protocols (no Ray, no concrete
sampler or learner), envs/ and rewards/ import nothing from rl_lora, and the implementations satisfy the
protocols the step uses."""
from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

from rl_lora import types

REPO = Path(__file__).resolve().parents[1]

# Lower numbers sit lower: a module may import from lower layers, and from its own package.
LAYERS = {
    "rl_lora.errors": 0, "rl_lora.io": 0, "rl_lora.memory": 0, "rl_lora.tokens": 0,
    "rl_lora.device": 0.5,  # its UserError from below, and config asks it whether auto means a GPU
    "rl_lora.config": 1,
    "rl_lora.types": 2,
    "rl_lora.models": 3,
    "rl_lora.step": 4, "rl_lora.policy": 4, "rl_lora.sampling": 4, "rl_lora.tasks": 4,
    "rl_lora.cluster": 5,
    "rl_lora.run": 6,
    "rl_lora.compare": 7,
    "rl_lora.cli": 8,
}


def _unit(module: str) -> str:
    """The layer unit a module belongs to: a sub-package, or a top-level module of rl_lora."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _modules(package: str) -> dict[str, Path]:
    root = REPO / package
    return {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
            for p in root.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every module an import statement names, at the top or inside a function (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_every_module_has_a_layer():
    assert {_unit(m) for m in _modules("rl_lora") if m != "rl_lora"} == set(LAYERS)


def test_rl_lora_imports_only_downwards_and_has_no_cycle():
    upward = []
    for module, path in _modules("rl_lora").items():
        if module == "rl_lora":
            continue
        mine = _unit(module)
        for target in _imports(path):
            if not target.startswith("rl_lora.") or _unit(target) not in LAYERS:
                continue
            theirs = _unit(target)
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_the_step_imports_no_ray_and_no_concrete_sampler_or_learner():
    for module, path in _modules("rl_lora/step").items():
        imported = _imports(path)
        assert not {i for i in imported if i == "ray" or i.startswith("ray.")}, module
        assert not {i for i in imported if i.startswith(("rl_lora.cluster", "rl_lora.sampling", "rl_lora.policy",
                                                          "rl_lora.run"))}, module


@pytest.mark.parametrize("package", ["envs", "rewards"])
def test_envs_and_rewards_import_nothing_from_rl_lora(package):
    for module, path in _modules(package).items():
        assert not {i for i in _imports(path) if i == "rl_lora" or i.startswith("rl_lora.")}, module


def _members(protocol: type) -> tuple[set[str], set[str]]:
    """(data members, methods) a protocol declares."""
    methods = {name for name, value in vars(protocol).items() if inspect.isfunction(value)
               and not name.startswith("_")}
    data = set(typing.get_type_hints(protocol)) - methods
    return data, methods


def _conforms(cls: type, protocol: type) -> list[str]:
    """What `cls` lacks of `protocol`: a method, a method's parameters, or a data member (a class attribute, a
    property, or an attribute its code assigns on self)."""
    data, methods = _members(protocol)
    source = inspect.getsource(cls)
    missing = []
    for name in sorted(methods):
        mine = getattr(cls, name, None)
        if not callable(mine):
            missing.append(f"method {name}")
            continue
        wanted = list(inspect.signature(getattr(protocol, name)).parameters)
        have = list(inspect.signature(mine).parameters)
        if have[:len(wanted)] != wanted or any(inspect.signature(mine).parameters[p].default is inspect._empty
                                               for p in have[len(wanted):]):
            missing.append(f"{name}{tuple(have)} vs {tuple(wanted)}")
    for name in sorted(data):
        if not hasattr(cls, name) and f"self.{name}" not in source and f"self.{name}," not in source:
            missing.append(f"attribute {name}")
    return missing


def _implementations():
    from rl_lora.cluster.pool import WorkerPool
    from rl_lora.cluster.remote_learner import RemoteLearner
    from rl_lora.policy.learner import LocalLearner
    from rl_lora.sampling.hf import HFBackend
    from rl_lora.sampling.local import LocalSampler
    from rl_lora.sampling.shared_engine import EngineSlot
    from rl_lora.sampling.vllm import VLLMBackend

    return [(LocalSampler, types.Sampler), (WorkerPool, types.Sampler), (LocalLearner, types.Learner),
            (RemoteLearner, types.Learner), (HFBackend, types.SamplingBackend),
            (VLLMBackend, types.SamplingBackend), (EngineSlot, types.SamplingBackend)]


@pytest.mark.parametrize("cls, protocol", _implementations(), ids=lambda x: x.__name__)
def test_implementations_satisfy_the_protocols(cls, protocol):
    assert _conforms(cls, protocol) == []


def test_the_conformance_check_can_fail():
    class HalfASampler:
        pad_id = 0

        def submit(self, prompts, samples, n, sampling):
            pass

    assert _conforms(HalfASampler, types.Sampler) == ["method close", "method collect", "method generate",
                                                      "method sync"]


def test_run_folder_file_names_are_written_in_one_module():
    """config.yaml, summary.json, ... appear as path literals (the name, or a path that starts or ends with it)
    only in rl_lora/run/folder.py. Messages that mention a file in passing (they have spaces) do not count."""
    names = {"config.yaml", "summary.json", "metrics.jsonl", "learner_memory.json", "trainer_state.json",
             "optimizer.pt", "rng.pt", "checkpoints", "evals", "tensorboard", "curve.png", "code.json",
             "code.diff"}
    holders = {}
    for module, path in _modules("rl_lora").items():
        literals = {node.value for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        paths = {text for text in literals if not any(c.isspace() for c in text)}  # messages have spaces
        hits = {name for name in names if any(text == name or text.endswith("/" + name) or text.startswith(name + "/")
                                              for text in paths)}
        if hits:
            holders[module] = hits
    assert set(holders) == {"rl_lora.run.folder"}, holders
