"""Built-in problems: image and tabular (standard), sequence and text ones generated offline."""
