"""Built-in post-processors: MorphNet."""
