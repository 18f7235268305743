#!/usr/bin/env python
"""Training on CPU and GPU: epoch time, samples/s, overhead outside training, GPU utilisation.

Two parts (issue "Train where NAS users train"):

1. **Fixed networks** (``NETWORKS``: an MLP to a ~10⁸-FLOP conv net) on Fashion-MNIST, evaluated
   through :class:`nasfw.Evaluator` (the code a worker runs) on each available setting: the CPU
   (fp32), and every GPU setting (``cuda`` in fp32 and bf16) when torch sees one. Per network and
   setting: training seconds per epoch, samples/s, and the overhead outside training — the
   share of the evaluation's wall time spent neither in ``train_model``'s timed epochs nor in
   scoring the validation split (building, the size check, moving data, the process) — after
   one warm-up evaluation; scoring's share is reported beside it.
2. **A CoDeepNEAT search on the GPU** through the CLI (``train.device=cuda``,
   ``launcher.workers`` = the GPU count), while ``nvidia-smi`` samples GPU utilisation every
   200 ms; the utilisation is averaged over the evaluation phase (first trial start to last
   trial end, from the study). Targets: ≥ 80 % utilisation, overhead ≤ 5 % for networks of
   ≥ 10⁷ FLOPs.

Without a GPU, part 1 runs on the CPU only and part 2 is reported as not run. Results go to
``--out`` (``gpu.json``, ``gpu.md``) and one MLflow run in experiment ``nasfw-benchmarks``.

    python benchmarks/gpu.py --data-dir ../shared/data/fashion_mnist
    python benchmarks/gpu.py --data-dir ../shared/data/fashion_mnist --quick   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _conv(i: int, filters: int, source: str, k: int = 3) -> dict[str, Any]:
    params = {"filters": filters, "kernel_size": k, "activation": "relu"}
    return {"id": f"c{i}", "op": "conv2d", "params": params, "inputs": [source]}


def _chain(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "nodes": list(nodes), "output": nodes[-1]["id"]}


NETWORKS = {
    "mlp-256": _chain({"id": "d", "op": "dense", "params": {"units": 256}, "inputs": ["input"]}),
    "conv-16-32": _chain(
        _conv(0, 16, "input", 5),
        {"id": "p0", "op": "maxpool2d", "params": {"pool_size": 2}, "inputs": ["c0"]},
        _conv(1, 32, "p0", 5),
        {"id": "p1", "op": "maxpool2d", "params": {"pool_size": 2}, "inputs": ["c1"]},
        {"id": "d", "op": "dense", "params": {"units": 128}, "inputs": ["p1"]},
    ),
    "conv-32-64": _chain(
        _conv(0, 32, "input"),
        _conv(1, 64, "c0"),
        {"id": "p", "op": "maxpool2d", "params": {"pool_size": 2}, "inputs": ["c1"]},
        {"id": "d", "op": "dense", "params": {"units": 128}, "inputs": ["p"]},
    ),
    "conv-32-64-64": _chain(
        _conv(0, 32, "input"),
        _conv(1, 64, "c0"),
        _conv(2, 64, "c1"),
        {"id": "p", "op": "maxpool2d", "params": {"pool_size": 2}, "inputs": ["c2"]},
        {"id": "d", "op": "dense", "params": {"units": 256}, "inputs": ["p"]},
    ),
}


def settings_available() -> list[tuple[str, str]]:
    import torch

    found = [("cpu", "fp32")]
    if torch.cuda.is_available():
        found += [("cuda", "fp32"), ("cuda", "bf16")]
    return found


def measure_networks(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Part 1: every network on every available (device, precision), through the Evaluator."""
    import torch

    from nasfw import (
        ArchGraph,
        Candidate,
        Evaluator,
        ProblemConfig,
        TrainConfig,
        build_model,
        model_cost,
    )
    from nasfw.evaluate import load_problem

    rows = []
    for device, precision in settings_available():
        samples = args.cpu_samples if device == "cpu" else args.gpu_samples
        problem_config = ProblemConfig(
            name="fashion_mnist",
            data_dir=str(args.data_dir),
            val_fraction=0.1,
            max_train_samples=samples,
        )
        problem = load_problem(problem_config)
        train = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, device=device, precision=precision
        )
        evaluator = Evaluator(
            problem=problem_config,
            train=train,
            seed=0,
            max_params=10**9,
            threads=args.threads,
        )
        for name, document in NETWORKS.items():
            graph = ArchGraph.from_json(json.dumps(document))
            with torch.device("meta"):
                cost = model_cost(build_model(graph, problem), problem.input_shape)
            evaluator(Candidate(graph))  # warm-up: data to the device, cuDNN autotuning
            started = time.perf_counter()
            result = evaluator(Candidate(graph))
            wall = time.perf_counter() - started
            epochs = max(result.epochs, 1)
            rows.append(
                {
                    "network": name,
                    "flops": cost.flops,
                    "device": device,
                    "precision": precision,
                    "device_name": result.extra.get("device_name"),
                    "train_samples": len(problem.train),
                    "epoch_seconds": result.train_seconds / epochs,
                    "samples_per_second": len(problem.train) * epochs / result.train_seconds,
                    "evaluation_seconds": wall,
                    "overhead_share": max(
                        0.0, 1.0 - (result.train_seconds + result.extra["score_seconds"]) / wall
                    ),
                    "scoring_share": result.extra["score_seconds"] / wall,
                    "val_accuracy": result.metric,
                }
            )
            print(_row_text(rows[-1]), flush=True)
    return rows


def _row_text(row: dict[str, Any]) -> str:
    return (
        f"{row['network']:>14} {row['device']}/{row['precision']}: "
        f"{row['epoch_seconds']:.3f} s/epoch, {row['samples_per_second']:,.0f} samples/s, "
        f"overhead {100 * row['overhead_share']:.1f} %"
    )


class GpuSampler:
    """``nvidia-smi`` utilisation samples (percent of time a kernel ran) every ``period_ms``."""

    def __init__(self, period_ms: int = 200) -> None:
        self.samples: list[tuple[float, list[float]]] = []
        self._proc = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                f"-lms={period_ms}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        batch: list[float] = []
        gpus = _gpu_count()
        for line in self._proc.stdout:
            batch.append(float(line.strip() or 0))
            if len(batch) == gpus:
                self.samples.append((time.time(), batch))
                batch = []

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)

    def mean_between(self, start: float, end: float) -> float | None:
        inside = [statistics.fmean(b) for t, b in self.samples if start <= t <= end]
        return statistics.fmean(inside) if inside else None


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def measure_search(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Part 2: a CoDeepNEAT search on the GPUs, with the GPUs' utilisation over it."""
    import torch

    if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
        return {"ran": False, "why": "no CUDA GPU (or no nvidia-smi) on this machine"}
    storage = f"sqlite:///{out / 'search.db'}"
    overrides = [
        "problem=fashion_mnist",
        f"problem.data_dir={args.data_dir}",
        "search_space=image_small",
        "tuner=codeepneat",
        f"tuner.generations={args.generations}",
        "train.device=cuda",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"launcher.workers={torch.cuda.device_count()}",
        "tracking=none",
        f"storage.url={storage}",
        "study_name=gpu-search",
    ]
    sampler = GpuSampler()
    run = harness.run_cli(overrides, cwd=out, capture=True)
    sampler.stop()
    if run.returncode != 0:
        return {"ran": False, "why": f"the search failed: {run.stderr[-2000:]}"}
    trials = harness.finished_trials(storage, "gpu-search")
    harness.require_trials("gpu search", trials)
    # The evaluation phase: from the first training's start to the last trial's end.
    ends = [t.result.finished for t in trials if t.result.finished is not None]
    firsts = [
        t.result.finished - t.result.train_seconds for t in trials if t.result.finished is not None
    ]
    window = (min(firsts), max(ends))
    train_seconds = sum(t.result.train_seconds for t in trials)
    return {
        "ran": True,
        "wall_seconds": run.wall_seconds,
        "evaluation_window_seconds": window[1] - window[0],
        "trials": len(trials),
        "gpus": torch.cuda.device_count(),
        "gpu_name": torch.cuda.get_device_name(0),
        "gpu_utilisation_percent": sampler.mean_between(*window),
        "training_share_of_window": train_seconds
        / max(1e-9, (window[1] - window[0]) * torch.cuda.device_count()),
    }


def report(rows: list[dict[str, Any]], search: dict[str, Any]) -> str:
    lines = [
        "| network | FLOPs | device / precision | s / epoch | samples / s | scoring | overhead |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['flops']:.2e} | {r['device']} / {r['precision']} "
            f"| {r['epoch_seconds']:.3f} | {r['samples_per_second']:,.0f} "
            f"| {100 * r['scoring_share']:.1f} % | {100 * r['overhead_share']:.1f} % |"
        )
    if search.get("ran"):
        lines += [
            "",
            f"Search on {search['gpus']}x {search['gpu_name']}: {search['trials']} networks, "
            f"GPU utilisation {search['gpu_utilisation_percent']:.0f} % over the evaluation "
            f"phase ({search['evaluation_window_seconds']:.0f} s).",
        ]
    else:
        lines += ["", f"Search on the GPU: not run ({search['why']})."]
    return "\n".join(lines)


def log_to_mlflow(doc: dict[str, Any], out: Path, uri: str | None) -> None:
    """Samples/s and overhead per network and setting, the search's GPU utilisation, the table
    and ``gpu.json``."""
    metrics: dict[str, float | None] = {}
    for r in doc["networks"]:
        key = f"{r['network']}.{r['device']}.{r['precision']}"
        metrics[f"{key}.samples_per_second"] = r["samples_per_second"]
        metrics[f"{key}.overhead_share"] = r["overhead_share"]
    if doc["search"].get("ran"):
        metrics["search.gpu_utilisation_percent"] = doc["search"]["gpu_utilisation_percent"]
    harness.log_to_mlflow(
        out,
        uri,
        benchmark="gpu",
        metrics=metrics,
        artifacts=[out / "gpu.md", out / "gpu.json"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, default=HERE / "out-gpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cpu-samples", type=int, default=10000, help="train rows on the CPU")
    parser.add_argument("--gpu-samples", type=int, default=None, help="train rows on a GPU")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--generations", type=int, default=3, help="of the GPU search")
    parser.add_argument("--tracking-uri", default=None, help="MLflow (default: <out>/mlflow.db)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.cpu_samples, args.gpu_samples, args.generations = 1, 600, 2000, 1
    if args.threads == 0:
        import os

        args.threads = os.cpu_count() or 1
    args.data_dir = args.data_dir.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = measure_networks(args)
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        search = measure_search(args, Path(scratch))
    doc = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "networks": rows,
        "search": search,
    }
    (args.out / "gpu.json").write_text(json.dumps(doc, indent=2))
    markdown = report(rows, search)
    (args.out / "gpu.md").write_text(markdown + "\n")
    print(markdown)
    log_to_mlflow(doc, args.out, args.tracking_uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
