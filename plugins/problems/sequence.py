"""Sequence problems, generated offline: MNIST-1D and a photoplethysmography heart-rate task.

| problem | input shape | task, metric | stands in for |
|---|---|---|---|
| ``mnist1d`` | sequence (1, 40) | classification, 10 classes, accuracy | itself (Greydanus 2020) |
| ``ppg_heart_rate`` | sequence (1, 128) | regression, bpm, ``neg_mae`` | UBFC-rPPG heart rate |

Both take ``problem.n_samples``, ``problem.noise`` and ``problem.split_seed`` (the data and the
splits depend on it, never on the search's seed).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from nasfw import DataError, Problem, ProblemConfig, hookimpl, split_arrays

# MNIST-1D's canonical data: seed 42, 5000 examples, the first 80 % for training.
MNIST1D_SEED = 42


def load_mnist1d(config: ProblemConfig) -> Problem:
    """MNIST-1D (Greydanus 2020, arXiv:2011.14439): ten 1-D digit templates padded, scaled,
    translated, sheared and noised into 40-step sequences, made by the ``mnist1d`` package's
    own ``make_dataset`` (never its download path).

    Defaults reproduce the published data set (5000 examples, seed 42, 4000 train / 1000
    test); ``problem.split_seed`` is added to the generator's seed, ``problem.n_samples``
    replaces 5000 and ``problem.noise`` multiplies both noise scales (1.0: published). The
    package's test split is the test split; validation is ``val_fraction`` of its training part.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = config.n_samples or args.num_samples
    if args.num_samples < 50:
        raise DataError(f"problem.n_samples={args.num_samples}: mnist1d needs at least 50")
    noise = 1.0 if config.noise is None else config.noise
    args.corr_noise_scale *= noise
    args.iid_noise_scale *= noise
    args.seed = MNIST1D_SEED + config.split_seed
    # make_dataset seeds numpy's and Python's global generators: leave them as they were.
    states = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    x, x_test = (data[k][:, None, :].astype(np.float32) for k in ("x", "x_test"))
    y, y_test = (data[k].astype(np.int64) for k in ("y", "y_test"))
    train, val, test = split_arrays(x, y, config, stratify=True, test=(x_test, y_test))
    return Problem(
        name=config.name,
        task="classification",
        modality="sequence",
        input_shape=(1, x.shape[2]),
        n_outputs=10,
        train=train,
        val=val,
        test=test,
        class_names=[str(d) for d in range(10)],
    )


# ppg_heart_rate: 8 s windows sampled at 16 Hz, heart rates of 40 to 180 bpm.
PPG_RATE_HZ = 16
PPG_SECONDS = 8
PPG_BPM = (40.0, 180.0)


def ppg_signals(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` PPG-like windows ``(n, 1, 128)`` and their mean heart rates ``(n,)`` in bpm.

    Each window is a pulse wave whose beat frequency follows the drawn heart rate with
    respiratory sinus arrhythmia (±3 %) and beat-to-beat jitter; every beat has a systolic peak
    and a smaller, later diastolic peak (the dicrotic notch between them), an amplitude that
    breathes, a baseline that drifts with breathing (0.15-0.5 Hz) and slowly wanders. Motion
    noise, scaled by ``noise`` (relative to the pulse amplitude), is white noise plus a few
    bursts of larger, smoothed artefacts. The target is the window's mean beat rate.
    """
    steps = PPG_RATE_HZ * PPG_SECONDS
    t = np.arange(steps) / PPG_RATE_HZ
    bpm = rng.uniform(*PPG_BPM, size=n)
    breath_hz = rng.uniform(0.15, 0.5, size=(n, 1))
    breath_phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    breath = np.sin(2 * np.pi * breath_hz * t + breath_phase)
    jitter = np.cumsum(rng.normal(0, 0.02, size=(n, steps)), axis=1)
    jitter -= jitter.mean(axis=1, keepdims=True)  # keeps the mean rate the drawn one
    instant_hz = bpm[:, None] / 60 * (1 + 0.03 * breath + 0.05 * jitter)
    phase = np.cumsum(instant_hz, axis=1) / PPG_RATE_HZ + rng.uniform(0, 1, size=(n, 1))
    beat = phase % 1.0
    systolic = np.exp(-(((beat - 0.2) / 0.08) ** 2))
    diastolic = rng.uniform(0.2, 0.5, size=(n, 1)) * np.exp(-(((beat - 0.5) / 0.12) ** 2))
    pulse = (systolic + diastolic) * (1 + 0.15 * breath)
    wander = np.cumsum(rng.normal(0, 0.03, size=(n, steps)), axis=1)
    baseline = rng.uniform(0.2, 0.8, size=(n, 1)) * breath + wander
    motion = rng.normal(0, 1, size=(n, steps))
    for i in range(n):  # bursts: 0-2 smoothed artefacts of 0.5-2 s
        for _ in range(int(rng.integers(0, 3))):
            start = int(rng.integers(0, steps))
            width = int(rng.integers(PPG_RATE_HZ // 2, 2 * PPG_RATE_HZ))
            motion[i, start : start + width] += (
                rng.normal(0, 3) * np.hanning(width)[: steps - start]
            )
    x = pulse + baseline + noise * motion
    mean_bpm = (phase[:, -1] - phase[:, 0]) / (t[-1] - t[0]) * 60
    return x[:, None, :].astype(np.float32), mean_bpm.astype(np.float32)


def load_ppg_heart_rate(config: ProblemConfig) -> Problem:
    """Heart rate (bpm) from a generated photoplethysmography window (:func:`ppg_signals`),
    standing in for UBFC-rPPG (camera PPG of 42 subjects, whose videos cannot be fetched here).

    ``problem.n_samples`` windows (default 3000), ``problem.noise`` motion noise relative to the
    pulse amplitude (default 0.3), generated from ``problem.split_seed``. Metric ``neg_mae``:
    minus the mean absolute error in bpm (the mean predictor scores about -35).
    """
    n = config.n_samples or 3000
    noise = 0.3 if config.noise is None else config.noise
    x, y = ppg_signals(n, noise, np.random.default_rng([config.split_seed, 1]))
    train, val, test = split_arrays(x, y, config, stratify=False)
    return Problem(
        name=config.name,
        task="regression",
        modality="sequence",
        input_shape=(1, x.shape[2]),
        n_outputs=1,
        train=train,
        val=val,
        test=test,
        metric="neg_mae",
    )


PROBLEMS: dict[str, Callable[[ProblemConfig], Problem]] = {
    "mnist1d": load_mnist1d,
    "ppg_heart_rate": load_ppg_heart_rate,
}


@hookimpl
def register_problems(register: Callable[[str, Any, Any], None]) -> None:
    for name, loader in PROBLEMS.items():
        register(name, loader, ProblemConfig(name=name))
