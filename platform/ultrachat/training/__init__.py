"""Fine-tuning UltraLLaMA (issue #5): dialogue data -> assistant-only-loss examples -> Ray Train + DeepSpeed."""
