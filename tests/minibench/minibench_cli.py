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


def build_table_db(folder, problems: list[str]):
    """A mini-benchmark DB of the table ``problems`` (12 references, 12 random lookups each)
    built by ``mode=minibench`` in ``folder``; its path."""
    from cli import nasfw

    out = nasfw(
        folder,
        "mode=minibench",
        f"minibench.problems=[{','.join(problems)}]",
        "minibench.references=12",
        "tuner=random",
        "tuner.n_trials=12",
        "storage=memory",
        "tracking=none",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return folder / "minibench.db"
