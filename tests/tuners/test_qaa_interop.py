"""QAA beside peft (LoRA on other modules of one model), the model methods attach installs, trl's SFTTrainer,
and materialising a QAA model built on the meta device."""
import pickle

import pytest
import torch

import qaa
from support import tiny_llama

peft = pytest.importorskip("peft")


def _ids():
    return torch.randint(3, 200, (2, 8), generator=torch.Generator().manual_seed(0))


def _kind(name: str) -> str:
    for kind in ("lora_A", "lora_B", "qaa_theta", "qaa_out"):
        if f".{kind}." in name:
            return kind
    return name


def _qaa_lora(order: str):
    from peft import LoraConfig, get_peft_model

    base, _ = tiny_llama(hidden=32, layers=1)
    lora = LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    config = qaa.QAAConfig(target_modules=["v_proj"], n_layers=1, seed=0)
    if order == "qaa_first":
        qaa.attach(base, config)
        model = get_peft_model(base, lora)  # peft freezes every parameter not named lora_* ...
        model.qaa_set_adapter("default", is_trainable=True)  # ... so QAA is made trainable again
    else:
        model = get_peft_model(base, lora)
        qaa.attach(model, config)  # the first attach freezes the base, not peft's adapters
    return model


@pytest.mark.parametrize("order", ["qaa_first", "lora_first"])
def test_qaa_and_lora_both_train_save_and_reload(order, tmp_path):
    from peft import PeftModel

    model = _qaa_lora(order)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sorted({_kind(n) for n in trainable}) == ["lora_A", "lora_B", "qaa_out", "qaa_theta"]
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.SGD(list(trainable.values()), lr=0.1)
    model.train()
    for _ in range(2):  # P starts at 0, so theta gets a gradient from the second step on
        opt.zero_grad()
        model(input_ids=_ids(), labels=_ids()).loss.backward()
        opt.step()
    model.eval()
    for n, p in trainable.items():
        assert not torch.equal(before[n], p.detach()), f"{n} did not change"
    with torch.no_grad():
        expected = model(input_ids=_ids()).logits
        with model.qaa_disable_adapter():
            without_qaa = model(input_ids=_ids()).logits
        with model.disable_adapter():  # peft's own switch: LoRA off, QAA still on
            without_lora = model(input_ids=_ids()).logits
    assert (expected - without_qaa).abs().max() > 1e-4 and (expected - without_lora).abs().max() > 1e-4

    model.save_pretrained(str(tmp_path / "lora"))  # peft writes its LoRA tensors only
    qaa.save_adapter(model, str(tmp_path / "qaa"))
    fresh, _ = tiny_llama(hidden=32, layers=1)
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "lora"))
    qaa.load_adapter(reloaded, str(tmp_path / "qaa"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=_ids()).logits, expected, rtol=0, atol=0)


def test_qaa_module_names_do_not_depend_on_the_peft_wrapper(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = _qaa_lora("lora_first")
    qaa.save_adapter(model, str(tmp_path / "qaa"))
    plain, _ = tiny_llama(hidden=32, layers=1)  # no LoRA: the QAA folder loads on the bare model too
    qaa.load_adapter(plain, str(tmp_path / "qaa"))
    assert [n for n, _ in qaa.qaa_layers(plain)] == ["model.layers.0.self_attn.v_proj"]
    assert get_peft_model is not None and LoraConfig is not None


def test_attach_installs_prefixed_methods_and_keeps_transformers_own():
    from transformers import LlamaForCausalLM

    model, _ = tiny_llama(hidden=32, layers=1)
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=1), adapter_name="second")
    # transformers' peft-integration methods are still the class's own
    for name in ("set_adapter", "disable_adapters", "enable_adapters", "load_adapter", "add_adapter"):
        assert getattr(model, name).__func__ is getattr(LlamaForCausalLM, name), name
    assert model.qaa_base_model() is model
    model.qaa_set_adapter("default")
    assert {layer.active_adapter for _, layer in qaa.qaa_layers(model)} == {"default"}
    with model.qaa_disable_adapter():
        assert all(layer.disabled for _, layer in qaa.qaa_layers(model))
    assert not any(layer.disabled for _, layer in qaa.qaa_layers(model))
    again = pickle.loads(pickle.dumps(model))
    again.qaa_set_adapter("second")
    assert {layer.active_adapter for _, layer in qaa.qaa_layers(again)} == {"second"}
    qaa.detach(model)
    assert not hasattr(model, "qaa_set_adapter") and not hasattr(model, "qaa_base_model")


def test_peft_cannot_register_qaa_out_of_tree():
    """peft's registry accepts only names of its closed ``PeftType`` enum (docs/design.md)."""
    from peft.utils.peft_types import PeftType, register_peft_method

    assert "QAA" not in [t.value for t in PeftType]
    with pytest.raises(ValueError, match="Unknown PEFT type QAA"):
        register_peft_method(name="qaa", config_cls=qaa.QAAConfig, model_cls=object)


def test_sft_trainer_route(tmp_path):
    """The route for trl: attach first, hand SFTTrainer the attached model without ``peft_config``."""
    trl = pytest.importorskip("trl", reason="trl is not installed (it brings datasets and pyarrow); the route is "
                                            "SFTTrainer(model=qaa.attach(model, config), ...) without peft_config")
    from datasets import Dataset

    model, tok = tiny_llama(hidden=32, layers=1)
    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=0))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    data = Dataset.from_dict({"text": ["The Eagle is a cheap coffee shop.", "Blue Spice is a restaurant."] * 4})
    args = trl.SFTConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, learning_rate=0.05,
                         logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, max_length=32)
    trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())]
    assert sorted({_kind(n) for n in changed}) == ["qaa_out", "qaa_theta"]


# ------------------------------------------------------------------------------------------ meta device
def _randomise_base(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


@pytest.mark.parametrize("config", [qaa.QAAConfig(n_layers=2, seed=3),
                                    qaa.QAAConfig(n_layers=1, seed=4, dtype="float64",
                                                  input_transform="standardize")])
def test_empty_weights_model_materialises_to_the_normally_built_one(config):
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    reference, _ = tiny_llama(hidden=32, layers=2)
    base_state = reference.state_dict()
    qaa.attach(reference, config)
    with init_empty_weights():  # parameters on meta (buffers such as RoPE's frequencies stay real)
        meta_model = LlamaForCausalLM(reference.config)
        qaa.attach(meta_model, config)
    assert all(p.device.type == "meta" for p in meta_model.parameters())
    # base weights assigned from a checkpoint, adapters reset
    meta_model.load_state_dict(base_state, strict=False, assign=True)
    meta_model.tie_weights()  # assign gives lm_head its own Parameter: tie it to the embedding again
    qaa.reset_adapter_parameters(meta_model)
    assert not any(t.device.type == "meta" for t in [*meta_model.parameters(), *meta_model.buffers()])
    ref_tensors = dict(reference.named_parameters())
    for name, p in meta_model.named_parameters():
        assert p.dtype == ref_tensors[name].dtype and p.requires_grad == ref_tensors[name].requires_grad, name
        torch.testing.assert_close(p, ref_tensors[name], rtol=0, atol=0)
    # equal forward, also once the adapters are away from their start
    for model in (reference, meta_model):
        with torch.no_grad():
            for _, layer in qaa.qaa_layers(model):
                w = layer.qaa_out["default"].weight
                w.copy_(torch.linspace(-1, 1, w.numel(), dtype=w.dtype).reshape(w.shape))
    with torch.no_grad():
        torch.testing.assert_close(meta_model.eval()(input_ids=_ids()).logits, reference(input_ids=_ids()).logits,
                                   rtol=0, atol=0)


def test_to_empty_then_reset_reproduces_the_seeded_adapters():
    from torch import nn

    def build():
        model = nn.Sequential()
        model.fc = nn.Linear(12, 6)
        model.out = nn.Linear(6, 3)
        return model

    config = qaa.QAAConfig(target_modules=["fc", "out"], n_layers=2, seed=11)
    reference = qaa.attach(build(), config)
    with torch.device("meta"):
        meta_model = qaa.attach(build(), config)
    meta_model.to_empty(device="cpu")
    meta_model.load_state_dict(reference.state_dict())  # a checkpoint of the whole model
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(meta_model):
            layer.qaa_theta["default"].fill_(9.0)  # what load left there is overwritten below
    qaa.reset_adapter_parameters(meta_model)
    for (name, a), (_, b) in zip(qaa.qaa_layers(reference), qaa.qaa_layers(meta_model)):
        torch.testing.assert_close(b.qaa_theta["default"], a.qaa_theta["default"], rtol=0, atol=0)
        assert not b.qaa_out["default"].weight.any()
    # the seeded draw is Normal(0, init_std) from torch.Generator().manual_seed(seed), layer after layer
    g = torch.Generator().manual_seed(11)
    for _, layer in qaa.qaa_layers(meta_model):
        expected = torch.empty(layer.qaa_theta["default"].shape[0]).normal_(0.0, 0.1, generator=g)
        torch.testing.assert_close(layer.qaa_theta["default"].detach(), expected, rtol=0, atol=0)
    x = torch.randn(4, 12)
    torch.testing.assert_close(meta_model(x), reference(x), rtol=0, atol=0)
    with pytest.raises(KeyError):
        qaa.reset_adapter_parameters(meta_model, "nope")


def test_offloaded_model_runs_and_trains_with_adapters_attached_after_loading(tmp_path):
    """``from_pretrained(device_map=..., offload_folder=...)`` then attach: the adapters live on the offloaded
    layers' execution device (never on meta), and the model computes what a fully loaded one does."""
    pytest.importorskip("accelerate")
    from transformers import LlamaForCausalLM

    base, _ = tiny_llama(hidden=32, layers=2)
    base.save_pretrained(str(tmp_path / "base"))
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    offloaded = LlamaForCausalLM.from_pretrained(str(tmp_path / "base"), device_map=device_map,
                                                 offload_folder=str(tmp_path / "offload"))
    assert offloaded.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
    loaded = LlamaForCausalLM.from_pretrained(str(tmp_path / "base"))
    config = qaa.QAAConfig(n_layers=1, seed=0)
    for model in (offloaded, loaded):
        qaa.attach(model, config)
        with torch.no_grad():
            for _, layer in qaa.qaa_layers(model):
                w = layer.qaa_out["default"].weight
                w.copy_(torch.linspace(-1, 1, w.numel()).reshape(w.shape))
    assert all(p.device.type == "cpu" for _, layer in qaa.qaa_layers(offloaded)
               for p in [*layer.qaa_theta.values(), *layer.qaa_out.parameters()])
    for model in (offloaded, loaded):
        model.eval()
        model.zero_grad()
        model(input_ids=_ids(), labels=_ids()).loss.backward()
    with torch.no_grad():
        torch.testing.assert_close(offloaded(input_ids=_ids()).logits, loaded(input_ids=_ids()).logits,
                                   rtol=0, atol=0)
    grads = {n: p.grad for n, p in loaded.named_parameters() if p.requires_grad}
    for n, p in offloaded.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
            torch.testing.assert_close(p.grad, grads[n], rtol=0, atol=0)


@pytest.mark.parametrize("order", ["qaa_first", "lora_first"])
@pytest.mark.parametrize("merge", [True, False])
def test_peft_merge_and_unload_keep_qaa_layers_as_they_are(order, merge):
    """peft's merge_and_unload() (LoRA merged into its base weights) and unload() (LoRA dropped) on a model that
    also holds QAA layers: no error, every QAA layer kept with its trained tensors, and the outputs are those
    of the model with LoRA (merged) or without LoRA (unloaded), QAA still on."""
    model = _qaa_lora(order)
    with torch.no_grad():  # QAA's output map starts at 0: give it values so the branch matters
        for _, layer in qaa.qaa_layers(model):
            for p in layer.qaa_out.parameters():
                p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "qaa_" in n}
    with torch.no_grad():
        with_lora = model(input_ids=_ids()).logits
        with model.disable_adapter():
            without_lora = model(input_ids=_ids()).logits
    plain = model.merge_and_unload() if merge else model.unload()
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert [n for n, _ in qaa.qaa_layers(plain)] == ["model.layers.0.self_attn.v_proj"]
    after = {n.replace("base_model.model.", ""): p for n, p in plain.named_parameters() if "qaa_" in n}
    assert {n.replace("base_model.model.", ""): t for n, t in before.items()}.keys() == after.keys()
    for n, t in before.items():
        torch.testing.assert_close(after[n.replace("base_model.model.", "")], t, rtol=0, atol=0)
    with torch.no_grad():
        logits = plain(input_ids=_ids()).logits
    torch.testing.assert_close(logits, with_lora if merge else without_lora, rtol=1e-5, atol=1e-5)
    assert (with_lora - without_lora).abs().max() > 1e-3   # LoRA matters, so the check above can tell them apart
