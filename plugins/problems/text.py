"""Text problems, generated offline from small grammars and tokenised by word.

| problem | input | task, metric | stands in for |
|---|---|---|---|
| ``grammar_acceptability`` | 24 token ids | acceptable or not, ``mcc`` | CoLA (GLUE) |
| ``review_sentiment`` | 20 token ids | positive or negative, accuracy | SST-2 (GLUE) |

Token id 0 is padding (sentences are padded at the end); ids 1.. are the words of the problem's
fixed vocabulary, in :data:`GRAMMAR_WORDS` / :data:`REVIEW_WORDS` order. Both take
``problem.n_samples``, ``problem.noise`` (the share of labels flipped at random, default 0) and
``problem.split_seed`` (the sentences and the splits depend on it only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nasfw import DataError, Problem, ProblemConfig, hookimpl, split_arrays

# -- grammar_acceptability --------------------------------------------------------------------

DETERMINERS = {"sg": ("a", "this", "every"), "pl": ("these", "many"), "any": ("the",)}
NOUNS = (
    ("dog", "dogs"), ("cat", "cats"), ("teacher", "teachers"), ("child", "children"),
    ("bird", "birds"), ("farmer", "farmers"), ("student", "students"), ("doctor", "doctors"),
)  # fmt: skip
INTRANSITIVE = (("runs", "run"), ("sleeps", "sleep"), ("laughs", "laugh"), ("waits", "wait"))
TRANSITIVE = (("sees", "see"), ("likes", "like"), ("follows", "follow"), ("helps", "help"))
ADJECTIVES = ("big", "small", "happy", "old", "young", "quiet")
PREPOSITIONS = ("near", "with", "behind")
ADVERBS = ("today", "often", "quickly")
GRAMMAR_WORDS: tuple[str, ...] = (
    *sorted({d for ds in DETERMINERS.values() for d in ds}),
    *(w for pair in NOUNS + INTRANSITIVE + TRANSITIVE for w in pair),
    *ADJECTIVES, *PREPOSITIONS, *ADVERBS, "that",
)  # fmt: skip
GRAMMAR_LENGTH = 24

# A word: (text, category, number), number "sg"/"pl"/"" (none); the main verb is marked.
Word = tuple[str, str, str]


def _noun_phrase(rng: np.random.Generator, depth: int) -> tuple[list[Word], str]:
    """Det (Adj) N (PP | relative clause); the phrase and its number."""
    number = "sg" if rng.random() < 0.5 else "pl"
    dets = DETERMINERS[number] + DETERMINERS["any"]
    words: list[Word] = [(dets[int(rng.integers(len(dets)))], "det", number)]
    if rng.random() < 0.4:
        words.append((ADJECTIVES[int(rng.integers(len(ADJECTIVES)))], "adj", ""))
    noun = NOUNS[int(rng.integers(len(NOUNS)))]
    words.append((noun[number == "pl"], "noun", number))
    roll = rng.random()
    if depth == 0 and roll < 0.3:  # a PP puts an "attractor" noun between subject and verb
        words.append((PREPOSITIONS[int(rng.integers(len(PREPOSITIONS)))], "prep", ""))
        words += _noun_phrase(rng, depth + 1)[0]
    elif depth == 0 and roll < 0.5:  # "that" + a verb phrase agreeing with this noun
        words.append(("that", "rel", ""))
        words += _verb_phrase(rng, number, depth + 1, main=False)
    return words, number


def _verb_phrase(rng: np.random.Generator, number: str, depth: int, main: bool) -> list[Word]:
    kind = "main" if main else "verb"
    if rng.random() < 0.5:
        verb = INTRANSITIVE[int(rng.integers(len(INTRANSITIVE)))]
        return [(verb[number == "pl"], kind, number)]
    verb = TRANSITIVE[int(rng.integers(len(TRANSITIVE)))]
    return [(verb[number == "pl"], kind, number), *_noun_phrase(rng, depth + 1)[0]]


def grammatical_sentence(rng: np.random.Generator) -> list[Word]:
    """S -> NP VP (Adv): determiners and verbs agree in number with their nouns."""
    subject, number = _noun_phrase(rng, 0)
    words = subject + _verb_phrase(rng, number, 0, main=True)
    if rng.random() < 0.3:
        words.append((ADVERBS[int(rng.integers(len(ADVERBS)))], "adv", ""))
    return words


def _other_number(word: Word) -> str:
    text, category, number = word
    if category == "det":
        return DETERMINERS["pl" if number == "sg" else "sg"][0]
    for pair in INTRANSITIVE + TRANSITIVE:
        if text in pair:
            return pair[1 - pair.index(text)]
    raise ValueError(word)


def corrupt(words: list[Word], rng: np.random.Generator) -> tuple[list[Word], str]:
    """An ungrammatical variant and the kind of error: every corruption breaks a rule the
    grammar never bends (agreement, every noun has a determiner in front, every sentence a main
    verb), so no corrupted sentence is also grammatical."""
    kind = ("agreement", "dropped", "swapped")[int(rng.integers(3))]
    out = list(words)
    if kind == "agreement":
        # Words with a number of their own: verbs, and determiners other than "the".
        options = [i for i, w in enumerate(out) if w[1] in ("main", "verb", "det") and w[2]]
        options = [i for i in options if out[i][0] not in DETERMINERS["any"]]
        i = options[int(rng.integers(len(options)))]
        _, category, number = out[i]
        out[i] = (_other_number(out[i]), category, "pl" if number == "sg" else "sg")
    elif kind == "dropped":
        options = [i for i, w in enumerate(out) if w[1] in ("det", "main")]
        del out[options[int(rng.integers(len(options)))]]
    else:  # a determiner after the word that follows it: "big the dog", "dog the runs"
        options = [i for i, w in enumerate(out) if w[1] == "det"]
        i = options[int(rng.integers(len(options)))]
        out[i], out[i + 1] = out[i + 1], out[i]
    return out, kind


def _tokenise(sentences: Sequence[Sequence[str]], vocabulary: Sequence[str], length: int) -> Any:
    ids = {w: i + 1 for i, w in enumerate(vocabulary)}
    x = np.zeros((len(sentences), length), dtype=np.int64)
    for row, words in enumerate(sentences):
        if len(words) > length:
            raise DataError(f"a generated sentence has {len(words)} words > {length}")
        x[row, : len(words)] = [ids[w] for w in words]
    return x


def _flip(y: np.ndarray, config: ProblemConfig) -> np.ndarray:
    """``y`` with a ``problem.noise`` share of labels flipped; its own random stream, so the
    sentences are the same whatever the noise."""
    noise = config.noise or 0.0
    if not 0 <= noise <= 0.5:
        raise DataError(
            f"problem={config.name}: problem.noise={noise} is a label-flip share in [0, 0.5]"
        )
    flipped = np.random.default_rng([config.split_seed, 99]).random(len(y)) < noise
    return np.where(flipped, 1 - y, y)


def _text_problem(
    config: ProblemConfig,
    x: np.ndarray,
    y: np.ndarray,
    vocabulary: Sequence[str],
    class_names: list[str],
    metric: str,
) -> Problem:
    train, val, test = split_arrays(x, y, config, stratify=True, standardize=False)
    return Problem(
        name=config.name,
        task="classification",
        modality="text",
        input_shape=(x.shape[1],),
        n_outputs=2,
        train=train,
        val=val,
        test=test,
        class_names=class_names,
        metric=metric,
        vocabulary=["<pad>", *vocabulary],
    )


def _n_samples(config: ProblemConfig, default: int) -> int:
    n = config.n_samples or default
    if n < 50:
        raise DataError(f"problem={config.name}: problem.n_samples={n} must be at least 50")
    return n


def load_grammar_acceptability(config: ProblemConfig) -> Problem:
    """Is a sentence grammatical? Sentences of a small agreement grammar (determiner-noun and
    subject-verb number, prepositional phrases and relative clauses that put other nouns
    between subject and verb), half of them corrupted by :func:`corrupt`: an agreement error,
    a dropped determiner or main verb, or a determiner swapped with the next word. Stands in
    for CoLA (Warstadt et al. 2019) and, like it, is scored by Matthews correlation (``mcc``;
    the majority class scores 0). Default 4000 sentences; label 1 = acceptable.
    """
    n = _n_samples(config, 4000)
    rng = np.random.default_rng([config.split_seed, 2])
    sentences, labels = [], []
    for i in range(n):
        words = grammatical_sentence(rng)
        acceptable = i % 2 == 0
        if not acceptable:
            words, _ = corrupt(words, rng)
        sentences.append([w[0] for w in words])
        labels.append(int(acceptable))
    x = _tokenise(sentences, GRAMMAR_WORDS, GRAMMAR_LENGTH)
    y = _flip(np.array(labels, dtype=np.int64), config)
    order = rng.permutation(n)
    return _text_problem(
        config, x[order], y[order], GRAMMAR_WORDS, ["unacceptable", "acceptable"], "mcc"
    )


# -- review_sentiment -------------------------------------------------------------------------

SUBJECTS = ("movie", "plot", "acting", "food", "service", "music", "ending", "book")
POSITIVE = ("good", "great", "wonderful", "fun", "moving", "clever")
NEGATIVE = ("bad", "awful", "boring", "dull", "weak", "silly")
INTENSIFIERS = ("very", "really", "quite")
REVIEW_WORDS: tuple[str, ...] = (
    "the", "was", "not", "but", "and", "although", "i", "do", "think",
    *SUBJECTS, *POSITIVE, *NEGATIVE, *INTENSIFIERS,
)  # fmt: skip
REVIEW_LENGTH = 20


def _clause(rng: np.random.Generator) -> tuple[list[str], int]:
    """ "the <subject> was (not) (very) <adjective>" and its polarity (1 positive)."""
    polarity = int(rng.random() < 0.5)
    adjectives = POSITIVE if polarity else NEGATIVE
    words = ["the", SUBJECTS[int(rng.integers(len(SUBJECTS)))], "was"]
    negated = rng.random() < 0.3
    if negated:
        words.append("not")
    if rng.random() < 0.4:
        words.append(INTENSIFIERS[int(rng.integers(len(INTENSIFIERS)))])
    words.append(adjectives[int(rng.integers(len(adjectives)))])
    return words, polarity ^ int(negated)


def review(rng: np.random.Generator) -> tuple[list[str], int]:
    """A review of one or two clauses and its sentiment. Negation flips a clause; in "A but
    B" and "although A B" the second clause decides; "A and B" join clauses of one sentiment;
    an opening "i do not think" flips the whole review ("i think" does not)."""
    first, polarity = _clause(rng)
    roll = rng.random()
    if roll < 0.25:
        second, polarity = _clause(rng)
        words = [*first, "but", *second]
    elif roll < 0.45:
        second, polarity = _clause(rng)
        words = ["although", *first, *second]
    elif roll < 0.65:
        while True:
            second, other = _clause(rng)
            if other == polarity:
                break
        words = [*first, "and", *second]
    else:
        words = first
    opening = rng.random()
    if opening < 0.2:
        words = ["i", "think", *words]
    elif opening < 0.4:
        words, polarity = ["i", "do", "not", "think", *words], 1 - polarity
    return words, polarity


def load_review_sentiment(config: ProblemConfig) -> Problem:
    """Positive or negative? Generated short reviews (:func:`review`) with negation, intensifiers,
    contrast and negated opinions ("i do not think the plot was dull but the acting was not
    bad"). Stands in for SST-2 (Socher
    et al. 2013); metric accuracy. Default 4000 reviews; label 1 = positive.
    """
    n = _n_samples(config, 4000)
    rng = np.random.default_rng([config.split_seed, 3])
    made = [review(rng) for _ in range(n)]
    x = _tokenise([w for w, _ in made], REVIEW_WORDS, REVIEW_LENGTH)
    y = _flip(np.array([p for _, p in made], dtype=np.int64), config)
    return _text_problem(config, x, y, REVIEW_WORDS, ["negative", "positive"], "accuracy")


PROBLEMS: dict[str, Callable[[ProblemConfig], Problem]] = {
    "grammar_acceptability": load_grammar_acceptability,
    "review_sentiment": load_review_sentiment,
}


@hookimpl
def register_problems(register: Callable[[str, Any, Any], None]) -> None:
    for name, loader in PROBLEMS.items():
        register(name, loader, ProblemConfig(name=name))
