"""The trainable policy: the learner (a PEFT LoRA adapter, or all weights for FullFT), its losses, log-probs."""
