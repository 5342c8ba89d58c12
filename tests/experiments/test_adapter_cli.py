"""``qaa adapter info / extract / export / evaluate`` on saved tiny-model adapters."""
import json

import pytest
import torch
from safetensors.torch import load_file

import qaa
from qaa.experiments.cli import main
from support import tiny_llama


@pytest.fixture
def saved(tmp_path):
    model, _ = tiny_llama(hidden=32, layers=1)
    qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=2, seed=0))
    folder = tmp_path / "adapter"
    qaa.save_adapter(model, str(folder))
    trainable = sum(p.numel() for n, p in model.named_parameters() if "qaa_" in n and p.requires_grad)
    return folder, trainable


def test_info_reports_the_config_and_counts_with_checksums_verified(saved, capsys):
    folder, trainable = saved
    assert main(["adapter", "info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] and info["trainable_params"] == trainable
    assert info["modules"] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    assert info["config"]["n_layers"] == 2 and info["config"]["target_modules"] == ["q_proj", "v_proj"]
    assert main(["adapter", "info", str(folder)]) == 0
    assert f"{trainable:,} trainable parameters" in capsys.readouterr().out


def test_info_refuses_a_corrupted_or_missing_folder(saved, tmp_path, capsys):
    folder, _ = saved
    weights = folder / "adapter_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped byte in the tensor data
    weights.write_bytes(bytes(blob))
    assert main(["adapter", "info", str(folder)]) == 2
    assert "qaa adapter: error:" in capsys.readouterr().err
    assert main(["adapter", "info", str(tmp_path / "nowhere")]) == 2
    assert "no such adapter folder" in capsys.readouterr().err


def test_extract_writes_the_same_tensors_and_refuses_a_non_empty_output(saved, tmp_path, capsys):
    folder, _ = saved
    out = tmp_path / "out"
    assert main(["adapter", "extract", str(folder), str(out)]) == 0
    a, b = load_file(str(folder / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["adapter", "extract", str(folder), str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_export_without_the_base_model_equals_the_export_from_the_model(tmp_path, capsys):
    """``qaa adapter export`` (a stand-in holding only the adapter) writes the same programs and manifest as
    ``qaa.export_openqasm`` on the real trained model."""
    model, _ = tiny_llama(hidden=32, layers=2)
    qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=2, seed=3, ansatz="ry_rz_ring_ry"))
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            layer.qaa_theta["default"].add_(0.37)  # "trained" angles, not the initial ones
    qaa.save_adapter(model, str(tmp_path / "adapter"))
    qaa.export_openqasm(model, tmp_path / "from_model")
    assert main(["adapter", "export", str(tmp_path / "adapter"), str(tmp_path / "from_cli")]) == 0
    assert "4 OpenQASM 3 programs" in capsys.readouterr().out
    want = sorted(p.name for p in (tmp_path / "from_model").iterdir())
    assert sorted(p.name for p in (tmp_path / "from_cli").iterdir()) == want and len(want) == 5
    for name in want:
        assert (tmp_path / "from_cli" / name).read_bytes() == (tmp_path / "from_model" / name).read_bytes(), name


def test_export_refuses_a_non_empty_output_and_a_corrupted_adapter(saved, tmp_path):
    folder, _ = saved
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert main(["adapter", "export", str(folder), str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    weights = folder / "adapter_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    assert main(["adapter", "export", str(folder), str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()


def _hand_nll(model, tok, prompt, refs):
    """Teacher-forced NLL of one input over all its references, one unpadded sequence at a time."""
    total, count = 0.0, 0
    for ref in refs:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(" " + ref.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([p + t])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        total += -sum(float(logp[len(p) - 1 + k, tok_id]) for k, tok_id in enumerate(t))
        count += len(t)
    return total / count


def test_evaluate_scores_a_saved_adapter_as_computed_by_hand(tiny_model_dir, tmp_path, capsys):
    import sacrebleu
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qaa.experiments.tasks import format_prompt

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            w = layer.qaa_out["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.2)  # a branch that changes the outputs
    qaa.save_adapter(model, str(tmp_path / "adapter"))
    out = tmp_path / "eval.json"
    args = ["adapter", "evaluate", str(tmp_path / "adapter"), "--task", "e2e", "--model", str(tiny_model_dir),
            "--eval-size", "3", "--no-bertscore", "--out", str(out)]
    assert main(args) == 0
    assert "3 test inputs" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert len(rec["hypotheses"]) == len(rec["nll"]) == 3 and rec["shots"] is None
    model.eval()
    for i, (inp, refs) in enumerate(zip(rec["inputs"], rec["references"])):
        assert len(refs) >= 1
        assert rec["nll"][i] == pytest.approx(_hand_nll(model, tok, format_prompt("e2e", inp), refs), rel=1e-4)
    bleu = sacrebleu.corpus_bleu(rec["hypotheses"], [list(r) for r in zip(*[
        refs + [refs[-1]] * (max(map(len, rec["references"])) - len(refs)) for refs in rec["references"]])])
    assert rec["metrics"]["nll"] == pytest.approx(sum(rec["nll"]) / 3)
    assert rec["metrics"]["bleu"] == pytest.approx(bleu.score, abs=1e-9)  # a repeated reference changes no BLEU
    # A result is never overwritten; bad input is refused before any model is loaded.
    assert main(args) == 2
    assert main(["adapter", "evaluate", str(tmp_path / "adapter"), "--task", "e2e", "--shots", "0",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert main(["adapter", "evaluate", str(tmp_path / "adapter"), "--task", "nope",
                 "--out", str(tmp_path / "y.json")]) == 2
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()
