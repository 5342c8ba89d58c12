"""QAA under ``torch.compile``: the adapter runs as custom operators, so a QAA model compiles into one graph
(``fullgraph=True``) and its forward and backward equal eager."""
import pytest
import torch
from torch import nn

import qaa
from support import tiny_llama


def _randomised(model):
    """P drawn away from zero, so the branch contributes to the output and to every gradient."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            w = layer.qaa_out["default"].weight
            w.copy_(torch.randn(w.shape, generator=g, dtype=w.dtype) * 0.5)
    return model


def test_compiled_tiny_llama_has_no_graph_break_and_equals_eager():
    model, _ = tiny_llama(hidden=32, layers=1)
    _randomised(qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=0)))
    model.train()
    ids = torch.randint(3, 200, (2, 8), generator=torch.Generator().manual_seed(0))
    explanation = torch._dynamo.explain(model)(input_ids=ids, labels=ids)
    assert explanation.graph_break_count == 0, [r.reason for r in explanation.break_reasons]
    assert explanation.graph_count == 1
    torch._dynamo.reset()

    compiled = torch.compile(model, fullgraph=True)
    out = compiled(input_ids=ids, labels=ids)
    out.loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("qaa_" in n for n in trainable)
    grads = {n: p.grad.clone() for n, p in trainable.items()}
    model.zero_grad()
    eager = model(input_ids=ids, labels=ids)
    eager.loss.backward()
    torch.testing.assert_close(out.logits, eager.logits, rtol=0, atol=1e-5)
    for n, p in trainable.items():
        assert p.grad.abs().sum() > 0, n
        torch.testing.assert_close(grads[n], p.grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("config", [
    qaa.QAAConfig(target_modules=["fc"], n_layers=1, readout="probs", ansatz="ry_rz_ring_ry", seed=0),
    qaa.QAAConfig(target_modules=["fc"], n_layers=1, dtype="float64", rescale_by_norm=True, scaling=0.5, seed=0),
    qaa.QAAConfig(target_modules=["fc"], n_layers=1, input_transform="standardize", dropout=0.2, seed=0),
])
@pytest.mark.parametrize("grad", [True, False])
def test_every_layer_option_traces_without_a_break(config, grad):
    model = nn.Sequential()
    model.fc = nn.Linear(12, 5)
    qaa.attach(model, config)
    model.train()
    x = torch.randn(3, 4, 12)
    with torch.set_grad_enabled(grad):
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [r.reason for r in explanation.break_reasons]


def test_a_layer_pickled_without_specs_resolves_them_on_load():
    import pickle

    layer = qaa.QAALayer(nn.Linear(12, 5), "default", qaa.QAAConfig(n_layers=2, readout="probs", seed=0))
    with torch.no_grad():
        layer.qaa_out["default"].weight.fill_(0.5)
    specs = dict(layer.qaa_specs)
    assert specs == {"default": ("ry_cnot_ring", 4, 2, "probs")}  # 12 inputs: 4 qubits, 16 probabilities
    x = torch.randn(3, 12)
    expected = layer(x)
    del layer.__dict__["qaa_specs"]  # the state of a layer saved before the operators
    again = pickle.loads(pickle.dumps(layer))
    assert again.qaa_specs == specs
    torch.testing.assert_close(again(x), expected, rtol=0, atol=0)
