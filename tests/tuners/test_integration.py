"""QAA the way users use PEFT, on a tiny random Llama (offline): gradient checkpointing, a bfloat16 base model,
``generate`` (and ``disable_adapter`` giving the base model's greedy output), a ``transformers.Trainer`` run,
and two adapters on one model switched by name, each saved and loaded."""
import math
import warnings

import pytest
import torch

import qaa
from support import tiny_llama

pytestmark = pytest.mark.filterwarnings("ignore:`(gradient|activation)_checkpointing|`is_gradient_checkpointing:FutureWarning")

TEXTS = ["name : the eagle | food : french | area : riverside", "the eagle serves french food by the river",
         "name : blue spice | price : cheap", "blue spice is a cheap coffee shop in the city centre"]


def model_and_tokenizer(seed=0, dtype=torch.float32):
    model, tok = tiny_llama(seed=seed)
    return model.to(dtype), tok


def batch(tok, n=4):
    enc = tok(TEXTS[:n], return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def randomise_adapter(model, name="default", seed=0, std=0.5):
    """A 'trained' adapter: P = 0 would hide the branch (and every theta gradient) at step 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            if name in layer.qaa_configs:
                w = layer.qaa_out[name].weight
                w.copy_((torch.randn(w.shape, generator=g) * std).to(w.dtype))


def adapter_grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def loss_and_grads(model, inputs):
    model.zero_grad(set_to_none=True)
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), adapter_grads(model)


# ------------------------------------------------------------------------------------------ checkpointing
@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(use_reentrant):
    model, tok = model_and_tokenizer()
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=0, ansatz="ry_rz_ring_ry"))
    randomise_adapter(model)
    model.train()
    inputs = batch(tok)
    loss0, grads0 = loss_and_grads(model, inputs)
    assert grads0 and all(g.abs().sum() > 0 for g in grads0.values())
    if use_reentrant:
        # Reentrant checkpointing only backpropagates into a segment whose input requires grad; with a frozen
        # embedding it does not, so (as with peft) the embedding output must be made to require grad.
        model.enable_input_require_grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.is_gradient_checkpointing
    loss1, grads1 = loss_and_grads(model, inputs)
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
    assert grads1.keys() == grads0.keys()
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], rtol=1e-4, atol=1e-6, msg=k)
    model.gradient_checkpointing_disable()


def test_reentrant_checkpointing_needs_input_grads():
    """Why enable_input_require_grads matters: with reentrant checkpointing no gradient reaches the adapter
    when the (frozen) embedding output does not require grad. transformers enables it in gradient_checkpointing_enable;
    undoing that shows the trap, and enabling it again restores the gradients."""
    model, tok = model_and_tokenizer()
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    randomise_adapter(model)
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.disable_input_require_grads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "None of the inputs have requires_grad=True"
        loss = model(**batch(tok)).loss
    assert not loss.requires_grad  # every decoder layer was checkpointed away from the adapter
    with pytest.raises(RuntimeError, match="does not require grad"):
        loss.backward()
    model.enable_input_require_grads()
    _, grads = loss_and_grads(model, batch(tok))
    assert grads and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


def test_training_loop_with_gradient_checkpointing():
    from qaa.experiments.train import TrainConfig, encode_pairs, train

    model, tok = model_and_tokenizer()
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    encoded = encode_pairs(tok, TEXTS[::2], TEXTS[1::2], max_length=48)
    result = train(model, tok, encoded, TrainConfig(steps=3, batch_size=2, warmup_steps=1,
                                                    gradient_checkpointing=True), progress=False)
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)
    assert not model.is_gradient_checkpointing


# ------------------------------------------------------------------------------------------ bfloat16 base
def test_bfloat16_base_model_trains_with_float32_adapter():
    model, tok = model_and_tokenizer(dtype=torch.bfloat16)
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=0))
    adapter = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert adapter and all(p.dtype == torch.float32 for p in adapter.values())
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if n not in adapter)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if n not in adapter}
    before = {n: p.detach().clone() for n, p in adapter.items()}
    inputs = batch(tok)
    model.train()
    opt = torch.optim.AdamW(adapter.values(), lr=1e-2)
    losses = []
    for _ in range(4):
        out = model(**inputs)
        assert out.logits.dtype == torch.bfloat16
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
                   for n, p in adapter.items() if "qaa_out" in n)
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert all(p.dtype == torch.float32 for p in adapter.values())
    assert any(not torch.equal(p, before[n]) for n, p in adapter.items() if "qaa_theta" in n)
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if n in base_before)
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------------------------ generate
def test_generate_with_adapter_and_disabled_adapter():
    base, tok = model_and_tokenizer()
    model, _ = model_and_tokenizer()
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=0))
    randomise_adapter(model, std=3.0)
    enc = tok(TEXTS[:2], return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        ref = base.generate(**enc, **kw)
        adapted = model.generate(**enc, **kw)  # KV cache: later steps feed (batch, 1, hidden) to the layers
        assert adapted.shape[0] == 2 and adapted.shape[1] > enc["input_ids"].shape[1]
        with qaa.disable_adapter(model):
            disabled = model.generate(**enc, **kw)
        again = model.generate(**enc, **kw)
        # the adapter really is active outside the context
        assert not torch.equal(model(**enc).logits, base(**enc).logits)
    assert torch.equal(disabled, ref)
    assert torch.equal(again, adapted)
    assert not torch.equal(adapted, ref)  # a large random adapter changes the greedy continuation


# ------------------------------------------------------------------------------------------ Trainer
def test_transformers_trainer_two_steps_and_evaluate(tmp_path):
    from transformers import Trainer, TrainingArguments, default_data_collator

    model, tok = model_and_tokenizer()
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=0))
    b = batch(tok)
    rows = [{k: v[i] for k, v in b.items()} for i in range(len(TEXTS))]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                             per_device_eval_batch_size=2, learning_rate=1e-2, report_to=[], use_cpu=True,
                             save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True,
                             dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows,
                      data_collator=default_data_collator)
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and torch.isfinite(torch.tensor(metrics["eval_loss"]))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(".qaa_" in n for n in changed)
    qaa.save_adapter(model, str(tmp_path / "adapter"))
    loaded = qaa.load_adapter(model_and_tokenizer()[0], str(tmp_path / "adapter"))
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(loaded(b["input_ids"]).logits, model(b["input_ids"]).logits, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ two adapters
def test_two_adapters_switched_by_name_saved_and_loaded(tmp_path):
    model, tok = model_and_tokenizer()
    ids = batch(tok)["input_ids"]
    with torch.no_grad():
        base_logits = model(ids).logits
    qaa.attach(model, qaa.QAAConfig(n_layers=2, seed=1), adapter_name="first")
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=2, ansatz="ry_rz_ring_ry", readout="probs",
                                    target_modules=["q_proj"]), adapter_name="second")
    randomise_adapter(model, "first", seed=1)
    randomise_adapter(model, "second", seed=2)
    assert model.qaa_active_adapter == "second"

    def out(name):
        qaa.set_adapter(model, name)
        with torch.no_grad():
            return model(ids).logits

    first, second = out("first"), out("second")
    assert not torch.allclose(first, second) and not torch.allclose(first, base_logits)
    torch.testing.assert_close(out("first"), first, rtol=0, atol=0)  # switching back is exact
    with pytest.raises(KeyError, match="no adapter named 'third'"):
        qaa.set_adapter(model, "third")
    # only the active adapter trains
    qaa.set_adapter(model, "first", is_trainable=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".first" in n for n in trainable)
    qaa.save_adapter(model, str(tmp_path / "first"), adapter_name="first")
    qaa.save_adapter(model, str(tmp_path / "second"), adapter_name="second")

    fresh, _ = model_and_tokenizer()
    qaa.load_adapter(fresh, str(tmp_path / "first"), adapter_name="first")
    qaa.load_adapter(fresh, str(tmp_path / "second"), adapter_name="second")
    for name, ref in (("first", first), ("second", second), ("first", first)):
        qaa.set_adapter(fresh, name)
        with torch.no_grad():
            torch.testing.assert_close(fresh(ids).logits, ref, rtol=0, atol=0)
    with qaa.disable_adapter(fresh), torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, base_logits, rtol=0, atol=0)
    # each adapter alone in its own model gives the same numbers
    alone, _ = model_and_tokenizer()
    qaa.load_adapter(alone, str(tmp_path / "second"))
    with torch.no_grad():
        torch.testing.assert_close(alone(ids).logits, second, rtol=0, atol=0)
    qaa.detach_adapter(fresh, "second")
    assert fresh.qaa_active_adapter == "first"
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, first, rtol=0, atol=0)
