"""Sampling: the backends (`hf`, transformers + PEFT, the reference; `vllm`, the production engine), building one
from the config, the shared engine, the probe check, and the in-process sampler."""
