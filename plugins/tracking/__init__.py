"""Built-in experiment tracking: MLflow."""
