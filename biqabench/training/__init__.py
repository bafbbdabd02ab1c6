"""Training loops: fine-tuning and pretraining, checkpoints, divergence, feature caches."""
