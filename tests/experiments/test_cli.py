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
    (["finetune", "--lr", "0"], "--lr must be a finite positive"),
    (["finetune", "--lr", "nan"], "--lr must be a finite positive"),
    (["finetune", "--lr", "inf"], "--lr must be a finite positive"),
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
