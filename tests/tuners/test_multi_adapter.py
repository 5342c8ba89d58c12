"""Several QAA adapters active at once: the layer adds the weighted sum of their branches (as peft sums active
LoRA adapters), they train together, the combination is saved and loaded back, and mistakes raise clearly."""
import json
import pickle

import pytest
import torch

import qaa
from fixture_model import fixture_input, fixture_model
from support import tiny_llama


def _two_adapters(dtype="float64"):
    """fixture_model with adapter "a" on both Linear layers and "b" on the first only, random non-zero maps."""
    model = fixture_model().double()
    qaa.attach(model, qaa.QAAConfig(target_modules=["0", "2"], n_layers=2, seed=1, dtype=dtype), adapter_name="a")
    qaa.attach(model, qaa.QAAConfig(target_modules=["0"], n_layers=1, seed=2, dtype=dtype), adapter_name="b")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            for name in layer.qaa_configs:
                w = layer.qaa_out[name].weight
                w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.dtype) * 0.3)
    return model


def _layer(model, name):
    return dict(qaa.qaa_layers(model))[name]


def test_layer_adds_the_weighted_sum_of_the_active_branches():
    model = _two_adapters()
    layer = _layer(model, "0")
    x = fixture_input().double()
    with torch.no_grad():
        base = layer.base_layer(x)
        qaa.set_adapter(model, "a")
        only_a = layer(x) - base
        qaa.set_adapter(model, "b")
        only_b = layer(x) - base
        qaa.set_adapter(model, ["a", "b"], weights=[0.5, -2.0])
        both = layer(x)
    assert only_a.abs().max() > 1e-3 and only_b.abs().max() > 1e-3
    torch.testing.assert_close(both, base + 0.5 * only_a - 2.0 * only_b, rtol=0, atol=1e-13)
    # Layer "2" holds only "a": it adds a's branch with a's weight.
    assert _layer(model, "2").active_adapters == ("a",)
    assert _layer(model, "2").adapter_weights == {"a": 0.5}
    assert model.qaa_active_adapter == ["a", "b"] and model.qaa_adapter_weights == {"a": 0.5, "b": -2.0}
    assert layer.active_adapter == ["a", "b"]  # peft's convention: a list when several are active


def test_several_active_adapters_train_together_and_only_they_train():
    model = _two_adapters(dtype="float32").float()
    qaa.attach(model, qaa.QAAConfig(target_modules=["2"], n_layers=1, seed=3), adapter_name="c")
    qaa.set_adapter(model, ["a", "b"], is_trainable=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("qaa_theta.a" in n or "qaa_out.a" in n or "qaa_theta.b" in n or "qaa_out.b" in n)
                             for n in trainable)
    assert any(".b" in n for n in trainable) and any(".a" in n for n in trainable)
    loss = model(fixture_input()).pow(2).sum()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "qaa_theta" in n), grads.keys()
    qaa.set_adapter(model, ["a", "b"], is_trainable=False)
    assert not any(p.requires_grad for p in model.parameters())


def test_combination_survives_pickle_and_detaching_one_adapter():
    model = _two_adapters()
    qaa.set_adapter(model, ["a", "b"], weights=[0.25, 3.0])
    x = fixture_input().double()
    with torch.no_grad():
        expected = model(x)
        again = pickle.loads(pickle.dumps(model))
        torch.testing.assert_close(again(x), expected, rtol=0, atol=0)
    qaa.detach_adapter(model, "b")
    assert model.qaa_active_adapter == "a" and model.qaa_adapter_weights == {"a": 0.25}


@pytest.mark.parametrize("names, weights, error, match", [
    ([], None, ValueError, "at least one"),
    (["a", "a"], None, ValueError, "repeat"),
    (["a", "nope"], None, KeyError, "nope"),
    (["a", "b"], [1.0], ValueError, "1 weights for 2"),
    (["a", "b"], [float("nan"), 1.0], ValueError, "finite"),
    (["a", "b"], [float("inf"), 1.0], ValueError, "finite"),
    (["a", "b"], ["x", 1.0], TypeError, "real numbers"),
    (["a", "b"], [True, 1.0], TypeError, "real numbers"),
    (["a", "b"], "ab", TypeError, "list of numbers"),
    (5, None, TypeError, "string or a list"),
    ([5], None, TypeError, "must be strings"),
])
def test_mistakes_raise_and_change_nothing(names, weights, error, match):
    model = _two_adapters()
    qaa.set_adapter(model, "b")
    x = fixture_input().double()
    with torch.no_grad():
        before = model(x)
    with pytest.raises(error, match=match):
        qaa.set_adapter(model, names, weights=weights)
    assert model.qaa_active_adapter == "b"
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def _llama_with_two(seed=0):
    model, _ = tiny_llama(hidden=32, layers=2)
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=seed), adapter_name="a")
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=seed + 1, target_modules=["v_proj"]), adapter_name="b")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            for name in layer.qaa_configs:
                w = layer.qaa_out[name].weight
                w.copy_(torch.randn(w.shape, generator=g) * 0.1)
    return model


def test_save_pretrained_records_the_combination_and_load_adapters_restores_it(tmp_path):
    model = _llama_with_two()
    qaa.set_adapter(model, ["b", "a"], weights=[1.5, 0.5])
    ids = torch.tensor([[5, 9, 11, 3, 7]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "saved")
    record = json.loads((tmp_path / "saved" / "qaa_adapters" / "active.json").read_text())
    assert record == {"active": ["b", "a"], "weights": [1.5, 0.5]}

    fresh, _ = tiny_llama(hidden=32, layers=2)
    qaa.load_adapters(fresh, str(tmp_path / "saved"))
    assert fresh.qaa_active_adapter == ["b", "a"] and fresh.qaa_adapter_weights == {"b": 1.5, "a": 0.5}
    assert not any(p.requires_grad for p in fresh.parameters())
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, expected, rtol=0, atol=0)

    trainable, _ = tiny_llama(hidden=32, layers=2)
    qaa.load_adapters(trainable, str(tmp_path / "saved"), is_trainable=True)
    names = {n for n, p in trainable.named_parameters() if p.requires_grad}
    assert any("qaa_out.a" in n for n in names) and any("qaa_out.b" in n for n in names)


def test_load_adapters_is_all_or_nothing(tmp_path):
    model = _llama_with_two()
    qaa.set_adapter(model, ["a", "b"])
    model.save_pretrained(tmp_path / "saved")
    active = tmp_path / "saved" / "qaa_adapters" / "active.json"
    active.write_text(json.dumps({"active": ["a", "zzz"], "weights": [1.0, 1.0]}))
    fresh, _ = tiny_llama(hidden=32, layers=2)
    with pytest.raises(ValueError, match="not saved in the folder"):
        qaa.load_adapters(fresh, str(tmp_path / "saved"))
    assert not list(qaa.qaa_layers(fresh)) and not hasattr(fresh, "qaa_configs")
    active.write_text("{not json")
    with pytest.raises(ValueError, match="invalid record"):
        qaa.load_adapters(fresh, str(tmp_path / "saved"))
    # An adapter that fails to load (corrupted weights) leaves the model as it was.
    active.write_text(json.dumps({"active": ["a", "b"], "weights": [1.0, 1.0]}))
    weights = tmp_path / "saved" / "qaa_adapters" / "b" / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        qaa.load_adapters(fresh, str(tmp_path / "saved"))
    assert not list(qaa.qaa_layers(fresh))
    with pytest.raises(FileNotFoundError, match="holds no QAA adapter"):
        qaa.load_adapters(fresh, str(tmp_path))


def test_qaa_trainer_checkpoint_of_a_combination_loads_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _llama_with_two()
    qaa.set_adapter(model, ["a", "b"], is_trainable=True, weights=[1.0, 0.5])
    g = torch.Generator().manual_seed(7)
    data = [{"input_ids": row, "labels": row} for row in torch.randint(3, 200, (8, 10), generator=g)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, save_steps=2,
                                          save_strategy="steps", per_device_train_batch_size=2, learning_rate=1e-2,
                                          report_to=[], use_cpu=True, disable_tqdm=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    qaa.QAATrainer(model=model, args=args, train_dataset=data).train()
    changed = {n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert any("qaa_out.a" in n for n in changed) and any("qaa_out.b" in n for n in changed)
    ids = torch.tensor([[5, 9, 11, 3, 7]])
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    fresh, _ = tiny_llama(hidden=32, layers=2)
    qaa.load_adapters(fresh, str(tmp_path / "run" / "checkpoint-2"))
    assert fresh.qaa_active_adapter == ["a", "b"] and fresh.qaa_adapter_weights == {"a": 1.0, "b": 0.5}
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, expected, rtol=0, atol=0)
