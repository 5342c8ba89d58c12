"""Bad options of the qaa command fail fast with the tool's own message and exit 2."""
import os
import subprocess
import sys

import pytest

import qaa
import qaa.experiments.cli
import qaa.experiments.base_model


# ------------------------------------------------------------------------------------------ CLI
BAD_CLI = [
    (["finetune", "--steps", "0"], "--steps must be >= 1"),
    (["finetune", "--steps", "-5"], "--steps must be >= 1"),
    (["finetune", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["finetune", "--lr", "0"], "the learning rate must be a positive finite number"),
    (["finetune", "--lr", "nan"], "the learning rate must be a positive finite number"),
    (["finetune", "--lr", "inf"], "the learning rate must be a positive finite number"),
    (["finetune", "--max-length", "4"], "--max-length must be >= 8"),
    (["finetune", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["finetune", "--test-fraction", "1.5"], "--test-fraction must be in"),
    (["finetune", "--test-fraction", "0"], "--test-fraction must be in"),
    (["finetune", "--eval-size", "0"], "--eval-size must be >= 1"),
    (["finetune", "--n-layers", "0"], "--n-layers must be >= 1"),
    (["finetune", "--scaling", "nan"], "--scaling must be a finite"),
    (["finetune", "--warmup-steps", "-1"], "--warmup-steps must be >= 0"),
    (["finetune", "--threads", "-2"], "--threads must be >= 0"),
    (["finetune", "--threads", "100000"], "--threads must be <= 1024"),
    (["finetune", "--target-modules", "q_proj,,v_proj"], "--target-modules"),
    (["finetune", "--steps", str(10**30)], "--steps must be <= 10000000"),
]


class TestCli:
    @pytest.mark.parametrize("argv,message", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
    def test_bad_options_fail_fast(self, argv, message, capsys, monkeypatch):
        import qaa.experiments.base_model

        def no_load(*a, **k):
            raise AssertionError("the model must not be loaded for a bad option")

        monkeypatch.setattr(qaa.experiments.base_model, "load_base_model", no_load)
        assert qaa.experiments.cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"qaa {argv[0]}: error:" in err and message in err

    def test_console_entry_point(self):
        out = subprocess.run([sys.executable, "-m", "qaa.experiments.cli", "finetune", "--steps", "0"], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert out.returncode == 2
        assert "qaa finetune: error: --steps must be >= 1, got 0" in out.stderr
        assert "Traceback" not in out.stderr

    def test_unknown_choice_is_argparse_error(self, capsys):
        with pytest.raises(SystemExit) as e:
            qaa.experiments.cli.main(["finetune", "--readout", "nope"])
        assert e.value.code == 2


def _no_load(monkeypatch):
    import qaa.experiments.finetune

    def no_load(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(qaa.experiments.base_model, "load_base_model", no_load)
    monkeypatch.setattr(qaa.experiments.finetune, "load_base_model", no_load)


@pytest.mark.parametrize("case", ["out-is-file", "adapter-is-file", "out-under-file"])
def test_unwritable_out_fails_before_loading(tmp_path, monkeypatch, capsys, case):
    _no_load(monkeypatch)
    out = tmp_path / "run"
    if case == "out-is-file":
        out.write_text("x")
    elif case == "adapter-is-file":
        out.mkdir()
        (out / "adapter").write_text("x")
    else:
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "run"
    assert qaa.experiments.cli.main(["finetune", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "qaa finetune: error: --out" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_fails_before_loading(tmp_path, monkeypatch, capsys):
    _no_load(monkeypatch)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert qaa.experiments.cli.main(["finetune", "--out", str(out / "run")]) == 2
    finally:
        out.chmod(0o755)
    assert "qaa finetune: error: --out: cannot write" in capsys.readouterr().err


def test_target_modules_typo_fails_before_the_base_evaluation(tmp_path, monkeypatch, capsys):
    import qaa.experiments.finetune
    from support import tiny_llama

    monkeypatch.setattr(qaa.experiments.finetune, "load_base_model", lambda name, progress=True: tiny_llama())

    def no_eval(*a, **k):
        raise AssertionError("the base model must not be evaluated")

    monkeypatch.setattr(qaa.experiments.finetune, "prepare_task", lambda *a, **k: ([], [], []))
    monkeypatch.setattr(qaa.experiments.finetune, "score", no_eval)
    argv = ["finetune", "--out", str(tmp_path / "run"), "--target-modules", "q_prj"]
    assert qaa.experiments.cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "qaa finetune: error:" in err and "Candidate names" in err and "q_proj" in err


def test_unusable_model_folder_is_the_tools_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{ garbage")
    assert qaa.experiments.cli.main(["finetune", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "qaa finetune: error:" in err and "Traceback" not in err
