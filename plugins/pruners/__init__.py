"""Built-in pruners: Optuna's."""
