"""The quick suite the CLI tests build their mini-benchmark DB from."""

SUITE = 'minibench.problems=[digits,"digits_noisy:noise=0.5",iris,wine]'
QUICK = [
    "mode=minibench",
    "tuner=random",
    "tuner.n_trials=4",
    "tuner.batch_size=4",
    "train.epochs=1",
    "launcher.workers=0",
    "tracking=none",
    "minibench.top_k=3",
]
