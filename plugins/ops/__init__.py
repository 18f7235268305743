"""Built-in ops (layer kinds): image and dense layers, sequence and text ops, and the torch
modules behind them."""
