"""Serving: Ray Serve deployments running vLLM and vLLM's own OpenAI layer in-process."""
