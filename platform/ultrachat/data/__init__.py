"""Data shipped with the package: the tiny dialogue corpus and, later, prompts and sample inputs."""
