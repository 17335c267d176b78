"""The RL step and what it needs besides a sampler and a learner: advantages, the data order, evaluation.
Imports no Ray and no concrete sampler or learner (rl_lora.types holds the protocols it uses)."""
