"""`rl-lora compare`: the sweep (arms x learning rates x seeds, each a normal run folder), the report (table and
plots from run folders), and the learner measured alone."""
