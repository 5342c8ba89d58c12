"""Issue 22, faults 9 and 14: ``qaa compare`` never replaces a given value, and every bad option value is refused
before a model is loaded, by a message naming the option."""
import pytest

from support import compare_args


def test_9_compare_zero_fractions_refused_not_replaced():
    from qaa.experiments.settings import resolve_settings

    for option, kw in (("--test-fraction", dict(test_fraction=0.0)), ("--val-fraction", dict(val_fraction=0.0))):
        with pytest.raises(ValueError, match="--test-fraction and --val-fraction must be in \\(0, 1\\).* got .*0\\.0\\b"):
            resolve_settings(compare_args(**kw))
    # unset (None) takes the default; a given value is kept as given
    s = resolve_settings(compare_args(test_fraction=None, val_fraction=None))
    assert (s.test_fraction, s.val_fraction) == (0.2, 0.1)
    s = resolve_settings(compare_args(test_fraction=0.3, val_fraction=0.15))
    assert (s.test_fraction, s.val_fraction) == (0.3, 0.15)


def test_9_compare_duplicate_learning_rate_refused():
    from qaa.experiments.settings import resolve_settings

    with pytest.raises(ValueError, match="--lr gives qaa's rate twice \\(0.001 and 0.002\\)"):
        resolve_settings(compare_args(lr="qaa=1e-3,qaa=2e-3"))
    assert resolve_settings(compare_args(lr="qaa=1e-3,lora=2e-3")).lr == {"qaa": 1e-3, "lora": 2e-3}


@pytest.mark.parametrize("option", ["--seeds", "--tasks", "--methods", "--lr"])
def test_14_compare_empty_lists_name_the_option(option):
    from qaa.experiments.settings import resolve_settings

    with pytest.raises(ValueError, match=f"{option} takes a comma-separated list, got the empty list ''"):
        resolve_settings(compare_args(**{option[2:]: ""}))


@pytest.mark.parametrize("argv,option", [(["--n-layers", "1000000000"], "--n-layers"),
                                         (["--scaling", "1e308"], "--scaling"),
                                         (["--test-fraction", "0.99"], "--test-fraction"),
                                         (["--seed", str(2**64)], "--seed"),
                                         (["--split-seed", "-1"], "--split-seed")])
def test_14_finetune_refuses_before_loading_and_names_the_option(monkeypatch, capsys, tmp_path, argv, option):
    from qaa.experiments import cli, finetune

    def no_run(args):
        raise AssertionError("the model must not be loaded for a bad option value")

    monkeypatch.setattr(finetune, "run_finetune", no_run)
    assert cli.main(["finetune", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert f"error: {option} must" in err and "Overflow" not in err and "val_fraction" not in err


def test_one_lr_rule_across_commands():
    """A plain rate names the method being run (finetune: qaa; compare: when one method runs); METHOD=LR pairs
    name several."""
    from qaa.experiments.settings import parse_lr, resolve_settings

    assert parse_lr("3e-3", ("qaa",)) == {"qaa": 3e-3} == parse_lr("qaa=3e-3", ("qaa",)) == parse_lr(3e-3, ("qaa",))
    assert parse_lr(None, ("qaa", "lora")) == {}
    with pytest.raises(ValueError, match="a plain rate names the method being run, but 2 run"):
        parse_lr("1e-3", ("qaa", "lora"))
    with pytest.raises(ValueError, match="--lr -1: the learning rate must be a positive finite number, got -1"):
        parse_lr("-1", ("qaa",))
    with pytest.raises(ValueError, match="positive finite"):
        parse_lr("qaa=-1", ("qaa",))
    with pytest.raises(ValueError, match="'fast' is not a number"):
        parse_lr("fast", ("qaa",))
    assert resolve_settings(compare_args(lr="2e-3", methods="lora")).lr == {"lora": 2e-3}
    with pytest.raises(ValueError, match="a plain rate"):
        resolve_settings(compare_args(lr="2e-3", methods="lora,qaa"))
