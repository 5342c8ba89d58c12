"""Tests for qaa.experiments.data: examples, splits by unique input, training pairs."""
import dataclasses

import pytest

from qaa.experiments.data import Example, split_by_input, split_three, split_two, training_pairs


# ------------------------------------------------------------------------------------------------ examples

def test_example_is_frozen_and_validated():
    ex = Example("x", ["a", "b"])
    assert ex.references == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.input = "y"
    with pytest.raises(ValueError):
        Example("x", ())
    with pytest.raises(TypeError):
        Example("x", "a single string")
    with pytest.raises(TypeError):
        Example(3, ("a",))


def _examples(n, refs=2):
    return [Example(f"input {i}", tuple(f"ref {i}.{j}" for j in range(refs))) for i in range(n)]


def test_split_by_input_has_no_overlap_and_is_deterministic():
    examples = _examples(50)
    train, test = split_by_input(examples, test_fraction=0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert not {e.input for e in train} & {e.input for e in test}
    assert sorted(train + test, key=lambda e: e.input) == sorted(examples, key=lambda e: e.input)
    assert split_by_input(examples, test_fraction=0.2, seed=3) == (train, test)
    assert split_by_input(list(examples), 0.2, 4)[1] != test


def test_split_keeps_repeated_inputs_together():
    examples = _examples(20) + [Example("input 3", ("another",)), Example("input 7", ("more",))]
    for seed in range(5):
        train, test = split_by_input(examples, 0.25, seed)
        train_inputs = {e.input for e in train}
        assert not train_inputs & {e.input for e in test}
        assert len(train) + len(test) == len(examples)
        assert len({e.input for e in test}) == 5


def test_split_caps():
    examples = _examples(100)
    full_train, full_test = split_by_input(examples, 0.3, seed=1)
    train, test = split_by_input(examples, 0.3, seed=1, max_train=7, max_test=4)
    assert train == full_train[:7] and test == full_test[:4]
    assert split_by_input(examples, 0.3, seed=1, max_train=2)[1] == full_test
    assert split_by_input(examples, 0.3, seed=1, max_test=0)[1] == []


@pytest.mark.parametrize("kwargs", [dict(test_fraction=0.0), dict(test_fraction=1.0), dict(test_fraction=-1),
                                    dict(max_train=-1), dict(max_test=1.5), dict(seed="a")])
def test_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        split_by_input(_examples(10), **kwargs)


def test_split_needs_two_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        split_by_input(_examples(1))
    with pytest.raises(TypeError):
        split_by_input([("a", "b"), ("c", "d")])


def test_training_pairs_one_per_reference():
    examples = [Example("a", ("1", "2", "3")), Example("b", ("4",))]
    assert training_pairs(examples) == [("a", "1"), ("a", "2"), ("a", "3"), ("b", "4")]
    assert training_pairs([]) == []


def test_split_two_holds_out_a_seeded_share_by_input():
    examples = _examples(20)
    rest, held = split_two(examples, seed=4, fraction=0.25)
    assert len({e.input for e in held}) == 5 and not {e.input for e in rest} & {e.input for e in held}
    assert split_two(examples, seed=4, fraction=0.25) == (rest, held)
    assert split_two(examples, seed=5, fraction=0.25)[1] != held


def test_split_three_is_disjoint_and_covers_every_input():
    examples = _examples(30)
    train, val, test = split_three(examples, split_seed=2, val_fraction=0.1, test_fraction=0.2)
    parts = [{e.input for e in p} for p in (train, val, test)]
    assert [len(p) for p in parts] == [21, 3, 6]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])

