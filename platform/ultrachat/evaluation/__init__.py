"""`ultrachat evaluate`: the paper's judge protocol (pairwise and 1-10 scores) against OpenAI-compatible models."""
