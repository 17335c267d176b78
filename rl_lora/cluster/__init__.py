"""Ray: placement of the learner and the rollout workers, the actors, the worker pool (with its fault handling),
the remote learner. Only rl_lora.run imports this package, and only when rollout.num_workers >= 1."""
