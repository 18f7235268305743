"""Generated problems (sequence, text, digits variants, friedman1): the data are what their
docstrings say, depend on problem.n_samples / noise / split_seed only, and labels are right."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from nasfw import DataError, ProblemConfig
from nasfw.evaluate import load_problem
from nasfw.plugins.problems import sequence as sequence_problems
from nasfw.plugins.problems import standard as problems
from nasfw.plugins.problems import text as text_problems
from nasfw.plugins.problems.text import (
    ADJECTIVES,
    ADVERBS,
    DETERMINERS,
    INTRANSITIVE,
    NEGATIVE,
    NOUNS,
    POSITIVE,
    PREPOSITIONS,
    TRANSITIVE,
)

# name: (modality, input shape, task, metric, n_samples to test with)
GENERATED = {
    "mnist1d": ("sequence", (1, 40), "classification", "accuracy", 200),
    "ppg_heart_rate": ("sequence", (1, 128), "regression", "neg_mae", 200),
    "grammar_acceptability": ("text", (24,), "classification", "mcc", 200),
    "review_sentiment": ("text", (20,), "classification", "accuracy", 200),
    "friedman1": ("tabular", (10,), "regression", "r2", 200),
}
LOADERS = {
    **sequence_problems.PROBLEMS,
    **text_problems.PROBLEMS,
    "friedman1": problems.load_friedman1,
    "digits_noisy": problems.load_digits_noisy,
    "digits_shifted": problems.load_digits_shifted,
}


def load(name: str, **settings):
    return LOADERS[name](ProblemConfig(name=name, **settings))


def everything(problem) -> tuple[np.ndarray, np.ndarray]:
    splits = (problem.train, problem.val, problem.test)
    return np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits])


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_problem_is_what_it_says(name):
    modality, shape, task, metric, n = GENERATED[name]
    problem = load(name, n_samples=n)
    assert (problem.modality, problem.input_shape, problem.task, problem.metric) == (
        modality,
        shape,
        task,
        metric,
    )
    x, y = everything(problem)
    assert x.shape == (n, *shape) and len(y) == n
    if modality == "text":
        assert x.dtype == np.int64 and problem.vocab_size == len(problem.vocabulary)
        assert x.min() == 0 and x.max() < problem.vocab_size  # padded, in the vocabulary
        assert problem.preprocessing is None  # token ids are not standardised
    else:
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert problem.vocab_size is None
    if task == "classification":
        assert set(np.unique(y)) == set(range(problem.n_outputs))


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_data_depend_on_the_problem_settings_only(name):
    n = GENERATED[name][4]
    a, b = everything(load(name, n_samples=n)), everything(load(name, n_samples=n))
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    other_seed = everything(load(name, n_samples=n, split_seed=1))
    assert not np.array_equal(a[0], other_seed[0])
    noisier = everything(load(name, n_samples=n, noise=0.45))
    changed = not np.array_equal(a[0], noisier[0]) or not np.array_equal(a[1], noisier[1])
    assert changed, "problem.noise changed nothing"


def test_mnist1d_defaults_are_the_published_data_set_and_leave_global_rngs_alone():
    np.random.seed(7)
    random.seed(7)
    before = np.random.random(), random.random()
    np.random.seed(7)
    random.seed(7)
    problem = load("mnist1d")
    assert (np.random.random(), random.random()) == before
    assert len(problem.train) + len(problem.val) == 4000 and len(problem.test) == 1000
    assert problem.class_names == [str(d) for d in range(10)]


def test_ppg_target_is_the_pulse_frequency():
    """Without motion noise the spectrum's strongest heart-rate-band peak is the target."""
    x, bpm = sequence_problems.ppg_signals(200, 0.0, np.random.default_rng(0))
    signal = x[:, 0] - x[:, 0].mean(axis=1, keepdims=True)
    freqs = np.fft.rfftfreq(4096, 1 / sequence_problems.PPG_RATE_HZ) * 60
    power = np.abs(np.fft.rfft(signal * np.hanning(signal.shape[1]), n=4096))
    band = (freqs > 35) & (freqs < 200)
    peak = freqs[band][power[:, band].argmax(axis=1)]
    error = np.abs(peak - bpm)
    assert np.median(error) < 1.0
    assert np.mean(error < 5) > 0.85  # the rest: a harmonic outweighs a slow fundamental
    assert bpm.min() >= 39 and bpm.max() <= 181


# -- grammar_acceptability: an independent recogniser of the grammar --------------------------
NUMBER = {}
for det in DETERMINERS["sg"]:
    NUMBER[det] = {"sg"}
for det in DETERMINERS["pl"]:
    NUMBER[det] = {"pl"}
for det in DETERMINERS["any"]:
    NUMBER[det] = {"sg", "pl"}
SG_NOUNS, PL_NOUNS = {n for n, _ in NOUNS}, {n for _, n in NOUNS}
VERBS = {
    "vi": ({v for v, _ in INTRANSITIVE}, {v for _, v in INTRANSITIVE}),
    "vt": ({v for v, _ in TRANSITIVE}, {v for _, v in TRANSITIVE}),
}


def _np(w: list[str], i: int, depth: int) -> list[tuple[int, str]]:
    """End positions and numbers of every noun phrase starting at ``i``."""
    if i >= len(w) or w[i] not in NUMBER:
        return []
    j = i + 1 + (i + 1 < len(w) and w[i + 1] in ADJECTIVES)
    if j >= len(w):
        return []
    number = "sg" if w[j] in SG_NOUNS else "pl" if w[j] in PL_NOUNS else None
    if number is None or number not in NUMBER[w[i]]:
        return []
    ends = [(j + 1, number)]
    if depth == 0 and j + 1 < len(w) and w[j + 1] in PREPOSITIONS:
        ends += [(k, number) for k, _ in _np(w, j + 2, 1)]
    if depth == 0 and j + 1 < len(w) and w[j + 1] == "that":
        ends += [(k, number) for k in _vp(w, j + 2, number, 1)]
    return ends


def _vp(w: list[str], i: int, number: str, depth: int) -> list[int]:
    if i >= len(w):
        return []
    index = 0 if number == "sg" else 1
    if w[i] in VERBS["vi"][index]:
        return [i + 1]
    if w[i] in VERBS["vt"][index]:
        return [k for k, _ in _np(w, i + 1, depth + 1)]
    return []


def grammatical(words: list[str]) -> bool:
    for end, number in _np(words, 0, 0):
        for k in _vp(words, end, number, 0):
            if k == len(words) or (k == len(words) - 1 and words[k] in ADVERBS):
                return True
    return False


def test_grammar_labels_match_an_independent_recogniser():
    problem = load("grammar_acceptability", n_samples=600)
    x, y = everything(problem)
    words = problem.vocabulary
    sentences = [[words[t] for t in row if t] for row in x]
    verdicts = np.array([grammatical(s) for s in sentences])
    assert np.array_equal(verdicts, y == 1)
    assert 0.45 < y.mean() < 0.55
    # Agreement "attractors": subjects with a noun of the other number before the verb.
    assert any(re.search(r"\b(near|with|behind|that)\b", " ".join(s)) for s in sentences)


def test_grammar_corruptions_cover_the_three_kinds():
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(100):
        sentence = text_problems.grammatical_sentence(rng)
        corrupted, kind = text_problems.corrupt(sentence, rng)
        assert grammatical([w[0] for w in sentence])
        assert not grammatical([w[0] for w in corrupted]), kind
        kinds.add(kind)
    assert kinds == {"agreement", "dropped", "swapped"}


def test_label_noise_flips_that_share_of_labels():
    problem = load("grammar_acceptability", n_samples=1000, noise=0.2)
    x, y = everything(problem)
    truth = [grammatical([problem.vocabulary[t] for t in row if t]) for row in x]
    assert 0.15 < np.mean(np.array(truth) != (y == 1)) < 0.25
    with pytest.raises(DataError, match=r"problem\.noise=0\.8"):
        load("review_sentiment", n_samples=100, noise=0.8)


def sentiment(words: list[str]) -> int:
    """Independent labeller: a clause ("the ...") is positive iff its adjective is positive xor
    it has "not"; the last clause decides ("but", "although"; "and" joins equal ones); an
    opening "i do not think" flips the review."""
    text = " ".join(words)
    last = re.split(r"\bthe\b", text)[-1].split()
    adjective = next(w for w in last if w in POSITIVE or w in NEGATIVE)
    clause = (adjective in POSITIVE) != ("not" in last)
    return int(clause != text.startswith("i do not think"))


def test_review_labels_follow_negation_and_contrast():
    problem = load("review_sentiment", n_samples=500)
    x, y = everything(problem)
    sentences = [[problem.vocabulary[t] for t in row if t] for row in x]
    assert [sentiment(s) for s in sentences] == y.tolist()
    for word in ("but", "although", "and", "not", "do"):
        assert any(word in s for s in sentences), word


def test_digits_variants_are_alike_but_not_equal():
    digits = load_problem(ProblemConfig(name="digits"))
    noisy, shifted = load("digits_noisy"), load("digits_shifted")
    for variant in (noisy, shifted):
        assert variant.input_shape == digits.input_shape
        assert np.array_equal(variant.train.y, digits.train.y)  # same split, same labels
        assert not np.allclose(variant.train.x, digits.train.x)
    unshifted = load("digits_shifted", noise=0)
    np.testing.assert_allclose(unshifted.train.x, digits.train.x)


@pytest.mark.parametrize("name", ["digits", "iris", "diabetes"])
@pytest.mark.parametrize("key", ["n_samples", "noise"])
def test_fixed_data_sets_refuse_generation_settings(name, key):
    with pytest.raises(DataError, match=rf"problem={name} reads a fixed data set: problem.{key}"):
        load_problem(ProblemConfig(name=name, **{key: 100}))


def test_generated_problems_refuse_too_few_samples():
    for name in ("mnist1d", "grammar_acceptability", "review_sentiment"):
        with pytest.raises(DataError, match="n_samples"):
            load(name, n_samples=20)
