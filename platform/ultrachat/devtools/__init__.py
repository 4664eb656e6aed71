"""Developer tools that run for real on 127.0.0.1 (e.g. a fake OpenAI-compatible server)."""
