"""Model references, tiny local models and the chat format."""
