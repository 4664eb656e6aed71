"""Fine-tuning UltraLLaMA: dialogue data -> assistant-only-loss examples -> Ray Train + DeepSpeed."""
