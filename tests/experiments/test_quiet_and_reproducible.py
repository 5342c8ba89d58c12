"""Output hygiene: ``--no-progress`` silences model loading's bars, ``--help`` renders its percent signs, no
FutureWarning from peft's read of ``is_gradient_checkpointing``, and identical saves write identical adapter
bytes."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings

import pytest
import torch

from qaa.experiments.base_model import load_base_model


@pytest.mark.parametrize("progress", [True, False])
def test_no_progress_silences_model_loading_bars(tiny_model_dir, capfd, progress):
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    load_base_model(str(tiny_model_dir), progress=progress)
    err = capfd.readouterr().err
    assert ("Loading weights" in err) == (progress and before)
    assert hf_logging.is_progress_bar_enabled() == before  # the switch is restored


def test_compare_help_renders_percent_signs():
    from qaa.experiments.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    text = sub.choices["compare"].format_help()
    assert "95% intervals" in " ".join(text.split()) and "%%" not in text


def test_peft_wrapping_raises_no_future_warning(tiny_model_dir, tmp_path):
    from qaa.tuners.baselines import attach_lora
    from qaa.tuners.baselines.peft_methods import load_peft_adapter, save_peft_adapter

    model, _ = load_base_model(str(tiny_model_dir), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        lora = attach_lora(model, target_modules=("q_proj", "v_proj"), r=2, alpha=4)
        save_peft_adapter(lora, tmp_path / "lora")
        load_peft_adapter(load_base_model(str(tiny_model_dir), progress=False)[0], tmp_path / "lora")
    # the filter is narrow: the same property read outside peft's construction still warns
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):
        _ = lora.get_base_model().is_gradient_checkpointing


_SAVE = """
import sys, torch
from qaa.tuners.save_load import save_adapter_files
g = torch.Generator().manual_seed(0)
save_adapter_files(sys.argv[1], {"peft_type": "QAA", "n_layers": 4, "target_modules": ["q_proj", "v_proj"]},
                   {"layers.1.theta": torch.randn(40, generator=g), "layers.0.theta": torch.randn(40, generator=g),
                    "layers.0.scale": torch.ones(3, dtype=torch.float64)})
"""


def test_identical_saves_write_identical_bytes_with_sorted_metadata(tmp_path):
    # separate processes: safetensors' writer orders metadata by a hash map seeded per process
    digests, headers = set(), []
    for i in range(4):
        folder = tmp_path / f"a{i}"
        subprocess.run([sys.executable, "-c", _SAVE, str(folder)], check=True)
        blob = (folder / "adapter_model.safetensors").read_bytes()
        digests.add(hashlib.sha256(blob).hexdigest())
        n = int.from_bytes(blob[:8], "little")
        assert n % 8 == 0
        headers.append(json.loads(blob[8:8 + n], object_pairs_hook=list))
    assert len(digests) == 1
    meta_keys = [k for k, _ in dict(headers[0])["__metadata__"]]
    assert meta_keys == sorted(meta_keys) == ["qaa_config", "qaa_sha256"]
    # the file is a valid safetensors file with the tensors as saved
    from safetensors.torch import load_file

    g = torch.Generator().manual_seed(0)
    expected = {"layers.1.theta": torch.randn(40, generator=g), "layers.0.theta": torch.randn(40, generator=g)}
    loaded = load_file(str(tmp_path / "a0" / "adapter_model.safetensors"))
    assert set(loaded) == {"layers.0.theta", "layers.1.theta", "layers.0.scale"}
    for k, v in expected.items():
        assert torch.equal(loaded[k], v)
    assert loaded["layers.0.scale"].dtype == torch.float64
