"""Serving (issue #6): Ray Serve deployments running vLLM and vLLM's own OpenAI layer in-process."""
