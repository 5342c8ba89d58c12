"""Examples and splits: one task input with all of its references, and the splits by unique input that keep every
test input out of training.

Where examples come from is :mod:`.sources` (the vendored benchmark releases, a user's copy, JSONL) and
:mod:`.bigbench` (the optional GEM archive); which task uses which is :mod:`.tasks`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["Example", "split_by_input", "split_three", "split_two", "webnlg_triples", "seen_inputs",
           "training_pairs"]


@dataclass(frozen=True)
class Example:
    """One task input with all of its references.

    Attributes:
        input: the source text (meaning representation, triples, article or concept list).
        references: the distinct reference outputs for ``input`` (a non-empty tuple of str; a list or
            other sequence given to the constructor is converted to a tuple).
    """

    input: str
    references: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.input, str):
            raise TypeError(f"Example.input must be str, got {type(self.input).__name__}")
        refs = self.references
        if isinstance(refs, str) or not isinstance(refs, Iterable):
            raise TypeError("Example.references must be a sequence of str")
        refs = tuple(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError("Example.references must be a non-empty sequence of str")
        object.__setattr__(self, "references", refs)


def _check_cap(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be None or a non-negative int, got {value!r}")
    return value


def _group_by_input(examples: Iterable[Example]) -> dict[str, list[Example]]:
    """Examples grouped by input, inputs in order of first appearance. Raises TypeError for a non-Example."""
    by_input: dict[str, list[Example]] = {}
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"expected Example items, got {type(ex).__name__}")
        by_input.setdefault(ex.input, []).append(ex)
    return by_input


def split_by_input(examples: Sequence[Example], test_fraction: float = 0.2, seed: int = 0,
                   max_train: int | None = None, max_test: int | None = None
                   ) -> tuple[list[Example], list[Example]]:
    """Split examples into train and test sets by unique input.

    The unique inputs (in order of first appearance) are shuffled with ``random.Random(seed)``; the first
    ``round(test_fraction * n_unique)`` of them (at least 1, at most ``n_unique - 1``) form the test set,
    the rest the training set, so no test input occurs in training. ``max_test`` / ``max_train`` then keep
    only the first that many inputs of each side; the test set therefore does not depend on ``max_train``,
    and a smaller ``max_test`` gives a prefix of a larger one. Examples sharing an input stay together.

    Args:
        examples: the examples (normally from :func:`load_task`).
        test_fraction: fraction of unique inputs held out, in (0, 1). Default 0.2.
        seed: shuffling seed (int). Default 0.
        max_train, max_test: optional caps on the number of unique inputs per side.

    Returns:
        ``(train, test)``: lists of :class:`Example`, each in shuffled order.

    Raises:
        ValueError: fewer than 2 unique inputs, ``test_fraction`` outside (0, 1), bad caps or seed.
        TypeError: an item is not an :class:`Example`.
    """
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    max_train = _check_cap(max_train, "max_train")
    max_test = _check_cap(max_test, "max_test")
    by_input = _group_by_input(examples)
    inputs = list(by_input)
    if len(inputs) < 2:
        raise ValueError(f"need at least 2 unique inputs to split, got {len(inputs)}")
    random.Random(seed).shuffle(inputs)
    n_test = min(max(round(test_fraction * len(inputs)), 1), len(inputs) - 1)
    test_inputs, train_inputs = inputs[:n_test], inputs[n_test:]
    if max_test is not None:
        test_inputs = test_inputs[:max_test]
    if max_train is not None:
        train_inputs = train_inputs[:max_train]
    train = [ex for inp in train_inputs for ex in by_input[inp]]
    test = [ex for inp in test_inputs for ex in by_input[inp]]
    return train, test


def split_three(examples: Sequence[Example], split_seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 0.2) -> tuple[list[Example], list[Example], list[Example]]:
    """Split examples into train, validation and test sets by unique input (the comparison's protocol).

    The unique inputs are shuffled with ``random.Random(split_seed)``, exactly as :func:`split_by_input` does;
    the first ``round(test_fraction * n)`` form the test set (the same test set :func:`split_by_input` gives for
    that seed and fraction), the next ``round(val_fraction * n)`` the validation set, carved from what would
    otherwise be training inputs, and the rest the training set. The three are disjoint by input, each keeps at
    least one input, and the split depends on ``split_seed`` alone (training seeds never move it).

    Raises:
        ValueError: fewer than 3 unique inputs, fractions outside (0, 1) or summing to >= 1, a bad seed.
        TypeError: an item is not an :class:`Example`.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ValueError(f"split_seed must be an int, got {split_seed!r}")
    by_input = _group_by_input(examples)
    inputs = list(by_input)
    n = len(inputs)
    if n < 3:
        raise ValueError(f"need at least 3 unique inputs to split three ways, got {n}")
    random.Random(split_seed).shuffle(inputs)
    n_test = min(max(round(test_fraction * n), 1), n - 2)
    n_val = min(max(round(val_fraction * n), 1), n - n_test - 1)
    parts = inputs[:n_test], inputs[n_test:n_test + n_val], inputs[n_test + n_val:]
    test, val, train = ([ex for inp in part for ex in by_input[inp]] for part in parts)
    return train, val, test


def webnlg_triples(text: str) -> frozenset[str]:
    """The set of ``subject | relation | object`` triples of a WebNLG input ``"(s | r | o), (s | r | o)"``
    (whitespace normalised)."""
    body = text.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    return frozenset(" | ".join(p.strip() for p in t.split("|")) for t in body.split("), (") if t.strip())


def seen_inputs(test: Sequence[Example], train: Sequence[Example]) -> list[bool]:
    """For WebNLG: whether each test input's triple set is a subset of some training input's triple set (its
    facts were all seen together in training) - the "seen" / "unseen" breakdown of WebNLG reports."""
    train_sets = [webnlg_triples(e.input) for e in train]
    return [any(webnlg_triples(e.input) <= t for t in train_sets) for e in test]


def training_pairs(examples: Iterable[Example]) -> list[tuple[str, str]]:
    """Flatten examples into ``(input, reference)`` pairs, one per reference, in order.

    Raises:
        TypeError: an item is not an :class:`Example`.
    """
    pairs = []
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"expected Example items, got {type(ex).__name__}")
        pairs.extend((ex.input, ref) for ref in ex.references)
    return pairs


def split_two(examples: Sequence[Example], seed: int = 0, fraction: float = 0.1) -> tuple[list[Example], list[Example]]:
    """Split examples into ``(rest, held_out)`` by unique input: the unique inputs are shuffled with
    ``random.Random(seed)`` and the first ``round(fraction * n)`` (at least 1, at most ``n - 1``) are held out.

    Used where a task's test set is fixed (E2E's official test set) and only validation is carved from the
    training pool.

    Raises:
        ValueError: fewer than 2 unique inputs, ``fraction`` outside (0, 1), a bad seed.
        TypeError: an item is not an :class:`Example`.
    """
    train, held = split_by_input(examples, test_fraction=fraction, seed=seed)
    return train, held
