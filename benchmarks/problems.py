"""Baselines and CoDeepNEAT on the sequence and text problems.

For each problem: the trivial baseline (majority class, or the train mean as the prediction),
a classic non-neural one (logistic regression on the raw values, on a bag of words for text,
the strongest spectral peak for the heart rate), then CoDeepNEAT through the CLI
(``python -m nasfw problem=<p> search_space=<space> ...``), all scored with the problem's own
metric on its test split. Writes ``<out>/problems.json`` and prints a Markdown table.

    .venv/bin/python benchmarks/problems.py --out benchmarks/results/problems
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch

from nasfw import Problem, ProblemConfig
from nasfw.evaluate import load_problem
from nasfw.metrics import metric

PROBLEMS = {
    "mnist1d": "sequence_small",
    "ppg_heart_rate": "sequence_small",
    "grammar_acceptability": "text_small",
    "review_sentiment": "text_small",
}


def score(problem: Problem, predictions: np.ndarray) -> float:
    """The problem's metric of ``predictions`` on the test split: class indices ``(N,)`` or
    values ``(N,)``."""
    y = torch.as_tensor(np.asarray(problem.test.y))
    if problem.task == "classification":
        outputs = torch.nn.functional.one_hot(torch.as_tensor(predictions), problem.n_outputs)
    else:
        outputs, y = torch.as_tensor(predictions).reshape(-1, 1), y.reshape(-1, 1)
    return metric(problem.metric, problem.task).fn(outputs.float(), y.float())


def trivial(problem: Problem) -> float:
    n = len(problem.test)
    if problem.task == "classification":
        majority = np.bincount(problem.train.y).argmax()
        return score(problem, np.full(n, majority))
    return score(problem, np.full(n, float(np.mean(problem.train.y))))


def features(problem: Problem, x: np.ndarray) -> np.ndarray:
    if problem.vocab_size is None:
        return x.reshape(len(x), -1)
    counts = np.zeros((len(x), problem.vocab_size))
    for row, tokens in enumerate(x):
        np.add.at(counts[row], tokens, 1)
    return counts[:, 1:]  # padding left out


def classic(problem: Problem) -> tuple[str, float]:
    if problem.name == "ppg_heart_rate":
        from nasfw.plugins.problems.sequence import PPG_RATE_HZ

        raw = problem.preprocessing.invert(problem.test.x)[:, 0]
        signal = raw - raw.mean(axis=1, keepdims=True)
        freqs = np.fft.rfftfreq(4096, 1 / PPG_RATE_HZ) * 60
        power = np.abs(np.fft.rfft(signal * np.hanning(signal.shape[1]), n=4096))
        band = (freqs >= 40) & (freqs <= 180)
        return "spectral peak", score(problem, freqs[band][power[:, band].argmax(axis=1)])
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000)
    model.fit(features(problem, problem.train.x), problem.train.y)
    name = "logistic regression" + (" on word counts" if problem.vocab_size else "")
    return name, score(problem, model.predict(features(problem, problem.test.x)))


def search(name: str, space: str, out: Path, overrides: list[str]) -> dict[str, Any]:
    """CoDeepNEAT on ``name`` through the CLI, to its end: the exported best network's scores,
    the search's wall seconds and the best network's ops."""
    run_dir = out / name
    url = f"sqlite:///{run_dir / 'nasfw.db'}"
    cli_args = [
        f"problem={name}", f"search_space={space}", "tracking=none", f"storage.url={url}",
        f"export_dir={run_dir / 'best_model'}", *overrides, "study_name=bench",
    ]  # fmt: skip
    found = harness.run_cli(cli_args, cwd=run_dir, log=run_dir / "cli.log")
    found.check(f"{name}: the search")
    harness.require_trials(f"{name}: the search", harness.finished_trials(url, "bench"))
    summary = json.loads((run_dir / "best_model" / "summary.json").read_text())
    graph = json.loads((run_dir / "best_model" / "graph.json").read_text())
    return {
        "seconds": found.wall_seconds,
        "val": next(v for k, v in summary.items() if k.startswith("val_")),
        "test": next(v for k, v in summary.items() if k.startswith("test_")),
        "best_ops": [n["op"] for n in graph["nodes"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/problems"))
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--no-search", action="store_true", help="baselines only")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=["tuner.generations=5", "train.epochs=15", "launcher.workers=2"],
        help="CLI overrides for every search",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in args.problems:
        problem = load_problem(ProblemConfig(name=name))
        classic_name, classic_score = classic(problem)
        row: dict[str, Any] = {
            "metric": problem.metric,
            "trivial": trivial(problem),
            "classic": classic_name,
            "classic_score": classic_score,
        }
        if not args.no_search:
            row["codeepneat"] = search(name, PROBLEMS[name], args.out, args.overrides)
        rows[name] = row
        (args.out / "problems.json").write_text(json.dumps(rows, indent=2))
    print(f"overrides: {' '.join(args.overrides)}")
    print("| problem | metric | trivial | classic | CoDeepNEAT test (val) | search, min |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        found = r.get("codeepneat")
        searched = f"{found['test']:.3f} ({found['val']:.3f})" if found else "n/a"
        minutes = f"{found['seconds'] / 60:.1f}" if found else "n/a"
        print(
            f"| `{name}` | {r['metric']} | {r['trivial']:.3f} | {r['classic_score']:.3f} "
            f"({r['classic']}) | {searched} | {minutes} |"
        )


if __name__ == "__main__":
    main()
