"""Issue 11: the adapter's state is its own, what is active is what runs on every layer, a save never makes
things worse. Each test attacks one fault through the public API of a tiny Llama."""
import copy
import io
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import qaa
from support import tiny_llama

IDS = torch.tensor([[1, 5, 9, 11, 40, 7]])


def model_and_ids(seed=0):
    model, _ = tiny_llama(seed=seed, hidden=32, layers=2, heads=2, kv_heads=1, vocab=300)
    return model


def randomise(model, name, seed):
    """Give adapter ``name`` a trained-looking P (P = 0 would hide a wrong adapter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            if name in layer.qaa_configs:
                layer.qaa_out[name].weight.copy_(torch.randn(layer.qaa_out[name].weight.shape, generator=g))


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def reference_logits(model, name):
    """Logits of a fresh base model carrying only adapter ``name``, on exactly the modules that hold it in
    ``model``, with its tensors: what the model must compute when ``name`` is active (None: the base)."""
    ref = model_and_ids()
    if name is None:
        return logits(ref)
    layers = {n: l for n, l in qaa.qaa_layers(model) if name in l.qaa_configs}
    cfg = qaa.QAAConfig.from_dict({**model.qaa_configs[name].to_dict(),
                                   "target_modules": "|".join(n.replace(".", r"\.") for n in layers)})
    qaa.attach(ref, cfg, adapter_name=name)
    with torch.no_grad():
        for n, l in qaa.qaa_layers(ref):
            l.qaa_theta[name].copy_(layers[n].qaa_theta[name])
            l.qaa_out[name].weight.copy_(layers[n].qaa_out[name].weight)
    return logits(ref)


def base_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ fault 1
def test_pickled_and_torch_saved_attached_model_loads():
    model = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0))
    randomise(model, "default", 1)
    expected = logits(model)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        torch.testing.assert_close(logits(clone), expected, rtol=0, atol=0)
        assert clone.get_nb_trainable_parameters() == qaa.get_nb_trainable_parameters(clone)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(logits(loaded), expected, rtol=0, atol=0)
    with pytest.raises(qaa.MergeError):
        loaded.merge_and_unload()


# ------------------------------------------------------------------------------------------ fault 2
def test_partial_second_adapter_runs_alone_on_every_layer(tmp_path):
    model = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0), adapter_name="a")
    randomise(model, "a", 1)
    qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj"], n_layers=1, seed=1), adapter_name="b")
    randomise(model, "b", 2)
    v_layers = [l for n, l in qaa.qaa_layers(model) if n.endswith("v_proj")]
    assert v_layers and all(l.active_adapter is None for l in v_layers)
    torch.testing.assert_close(logits(model), reference_logits(model, "b"), rtol=0, atol=0)
    # a partial adapter loaded as the trainable one behaves the same
    qaa.save_adapter(model, str(tmp_path / "b"), "b")
    fresh = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0), adapter_name="a")
    randomise(fresh, "a", 1)
    qaa.load_adapter(fresh, str(tmp_path / "b"), "b", is_trainable=True)
    assert all(l.active_adapter is None for n, l in qaa.qaa_layers(fresh) if n.endswith("v_proj"))
    torch.testing.assert_close(logits(fresh), reference_logits(model, "b"), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ fault 3
def test_attach_keeps_its_own_config_and_circuit(tmp_path):
    cfg = qaa.QAAConfig(n_layers=2, seed=0)
    model = qaa.attach(model_and_ids(), cfg)
    randomise(model, "default", 1)
    before = logits(model)
    cfg.scaling = 5.0
    cfg.n_layers = 7
    cfg.target_modules.append("k_proj")
    layer = next(qaa.qaa_layers(model))[1]
    layer.circuit("default").add_rotation("RY", 0, 0)  # a returned circuit is the caller's copy
    torch.testing.assert_close(logits(model), before, rtol=0, atol=0)
    qaa.save_adapter(model, str(tmp_path / "a"))
    import json

    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["scaling"] == 1.0 and saved["n_layers"] == 2 and saved["target_modules"] == ["q_proj", "v_proj"]
    # reusing the edited object for a second model does not reach the first
    other = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=2, seed=0))
    cfg.n_layers = 2
    qaa.attach(other, cfg, adapter_name="second")
    torch.testing.assert_close(logits(model), before, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ fault 4
def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_reference_adapter_load_changes_neither_active_nor_trainable(tmp_path):
    ref = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=3), adapter_name="ref")
    randomise(ref, "ref", 3)
    qaa.save_adapter(ref, str(tmp_path / "ref"), "ref")

    model = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0), adapter_name="a")
    randomise(model, "a", 1)
    model.lm_head.weight.requires_grad_(True)  # the user unfreezes the (tied) output layer
    before = trainable(model)
    assert "lm_head.weight" in before or "model.embed_tokens.weight" in before
    qaa.load_adapter(model, str(tmp_path / "ref"), "ref", is_trainable=False)
    assert model.qaa_active_adapter == "a"
    assert trainable(model) == before
    torch.testing.assert_close(logits(model), reference_logits(model, "a"), rtol=0, atol=0)

    qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=4), adapter_name="b")
    assert model.lm_head.weight.requires_grad
    qaa.set_adapter(model, "a", is_trainable=True)
    assert model.lm_head.weight.requires_grad
    assert trainable(model) == before  # "a" trainable again, "b" and "ref" frozen
    qaa.set_adapter(model, "ref")
    assert trainable(model) == before  # no is_trainable: nothing changes


def test_load_on_plain_base_is_active_and_trainable_only_if_asked(tmp_path):
    src = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0), adapter_name="x")
    qaa.save_adapter(src, str(tmp_path / "x"), "x")
    frozen = qaa.load_adapter(model_and_ids(), str(tmp_path / "x"), "x")
    assert frozen.qaa_active_adapter == "x" and not trainable(frozen)
    live = qaa.load_adapter(model_and_ids(), str(tmp_path / "x"), "x", is_trainable=True)
    assert trainable(live) == trainable(src)


# ------------------------------------------------------------------------------------------ fault 5
def test_double_backward_raises():
    layer = qaa.QAALayer(nn.Linear(8, 4), "default", qaa.QAAConfig(n_layers=1, seed=0))
    with torch.no_grad():
        layer.qaa_out["default"].weight.normal_()
    x = torch.randn(3, 8, requires_grad=True)
    (g,) = torch.autograd.grad(layer.branch(x, "default").square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice|once_differentiable"):
        g.square().sum().backward()


# ------------------------------------------------------------------------------------------ fault 6
def test_save_pretrained_writes_the_base_under_its_names_and_the_adapter_beside(tmp_path):
    from transformers import LlamaForCausalLM

    base_logits = logits(model_and_ids())
    model = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0))
    randomise(model, "default", 1)
    expected = logits(model)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = LlamaForCausalLM.from_pretrained(str(tmp_path / "m"))
    torch.testing.assert_close(logits(loaded.eval()), base_logits, rtol=0, atol=0)
    qaa.load_adapter(loaded, str(tmp_path / "m"))
    torch.testing.assert_close(logits(loaded), expected, rtol=0, atol=0)
    # the state dict round-trips into an attached model (what Trainer's resume does)
    again = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=5))
    again.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(logits(again), expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ fault 8
def test_adapter_internals_are_never_targets():
    model = qaa.attach(model_and_ids(), qaa.QAAConfig(target_modules=["q_proj"], n_layers=1, seed=0))
    qaa.attach(model, qaa.QAAConfig(target_modules=".*q_proj.*", n_layers=1, seed=1), adapter_name="b")
    names = [n for n, _ in qaa.qaa_layers(model)]
    assert names == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    # an adapter named like a target
    model2 = qaa.attach(model_and_ids(), qaa.QAAConfig(target_modules=["q_proj"], n_layers=1), adapter_name="q_proj")
    qaa.attach(model2, qaa.QAAConfig(target_modules=["q_proj"], n_layers=1), adapter_name="c")
    assert [n for n, _ in qaa.qaa_layers(model2)] == names
    qaa.detach(model2)
    torch.testing.assert_close(logits(model2), logits(model_and_ids()), rtol=0, atol=0)


class LinearWithChild(nn.Linear):
    def __init__(self):
        super().__init__(8, 8)
        self.inner = nn.Linear(8, 8)


def test_nested_targets_fail_before_changing_the_model():
    model = nn.Sequential(LinearWithChild())
    with pytest.raises(ValueError, match="inside target"):
        qaa.attach(model, qaa.QAAConfig(target_modules=".*", n_layers=1))
    assert isinstance(model[0], LinearWithChild) and "qaa_configs" not in model.__dict__
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ fault 10
KILL_CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    from torch import nn
    import qaa
    from qaa.tuners import save_load

    folder, stage = sys.argv[1], sys.argv[2]
    model = qaa.attach(nn.Sequential(nn.Linear(8, 8)), qaa.QAAConfig(target_modules=["0"], n_layers=2, seed=7,
                                                                   scaling=2.0))
    with torch.no_grad():
        model[0].qaa_out["default"].weight.fill_(0.5)
    real_replace, real_fsync = os.replace, os.fsync
    calls = {"replace": 0, "fsync": 0}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def fsync(fd):
        real_fsync(fd)
        calls["fsync"] += 1
        if stage == "temp-written" and calls["fsync"] == 1:
            die()

    def replace(a, b):
        if stage == f"before-rename-{calls['replace']}":
            die()
        real_replace(a, b)
        calls["replace"] += 1
        if stage == "after-renames" and calls["replace"] == 2:
            die()

    save_load.os.fsync = fsync
    save_load.os.replace = replace
    qaa.save_adapter(model, folder)
    print("not killed")
""")

STAGES = ["temp-written", "before-rename-0", "before-rename-1", "after-renames"]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_during_save_leaves_a_loadable_adapter(tmp_path, stage):
    folder = tmp_path / "adapter"
    old = qaa.attach(nn.Sequential(nn.Linear(8, 8)), qaa.QAAConfig(target_modules=["0"], n_layers=1, seed=1))
    qaa.save_adapter(old, str(folder))
    (tmp_path / "notes.txt").write_text("mine")
    (folder / "README.md").write_text("the user's file")
    proc = subprocess.run([sys.executable, "-c", KILL_CHILD, str(folder), stage], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # between the renames: the config file is stale
        loaded = qaa.load_adapter(nn.Sequential(nn.Linear(8, 8)), str(folder))
    cfg = loaded.qaa_configs["default"]
    if stage in ("temp-written", "before-rename-0"):
        assert (cfg.n_layers, cfg.scaling) == (1, 1.0)  # the old adapter
        assert torch.equal(loaded[0].qaa_theta["default"], old[0].qaa_theta["default"])
    else:
        assert (cfg.n_layers, cfg.scaling) == (2, 2.0)  # the new one
        assert torch.equal(loaded[0].qaa_out["default"].weight, torch.full((8, 3), 0.5))
    # the next save leaves no temporary file and touches nothing else
    qaa.save_adapter(old, str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "adapter_config.json",
                                                         "adapter_model.safetensors"]
    assert (folder / "README.md").read_text() == "the user's file"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = qaa.load_adapter(nn.Sequential(nn.Linear(8, 8)), str(folder))
    assert torch.equal(again[0].qaa_theta["default"], old[0].qaa_theta["default"])


# ------------------------------------------------------------------------------------------ fault 11
def test_checkpoint_recomputed_after_leaving_disable_adapter_raises():
    from torch.utils.checkpoint import checkpoint

    model = qaa.attach(nn.Sequential(nn.Linear(8, 8)), qaa.QAAConfig(target_modules=["0"], n_layers=1, seed=0))
    with torch.no_grad():
        model[0].qaa_out["default"].weight.normal_()
    x = torch.randn(4, 8, requires_grad=True)
    for reentrant in (True, False):
        with qaa.disable_adapter(model):
            y = checkpoint(model, x, use_reentrant=reentrant)
        with pytest.raises(RuntimeError, match="recomputed in backward"):
            y.sum().backward()
        x.grad = None
        # backward inside the context: the gradient of the base layer alone
        with qaa.disable_adapter(model):
            checkpoint(model, x, use_reentrant=reentrant).sum().backward()
        torch.testing.assert_close(x.grad, torch.ones(4, 8) @ model[0].base_layer.weight, rtol=0, atol=0)
        x.grad = None


# ------------------------------------------------------------------------------------------ fault 12
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_adapter_files_follow_the_umask(tmp_path, umask, mode):
    model = qaa.attach(nn.Sequential(nn.Linear(8, 8)), qaa.QAAConfig(target_modules=["0"], n_layers=1))
    previous = os.umask(umask)
    try:
        qaa.save_adapter(model, str(tmp_path / "a"))
    finally:
        os.umask(previous)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert os.stat(tmp_path / "a" / name).st_mode & 0o777 == mode


# ------------------------------------------------------------------------------------------ fault 13
def test_output_embeddings_are_refused_and_tied_models_save():
    model = model_and_ids()
    with pytest.raises(ValueError, match="output embedding"):
        qaa.attach(model, qaa.QAAConfig(target_modules=["lm_head", "q_proj"], n_layers=1))
    assert not list(qaa.qaa_layers(model)) and all(p.requires_grad for p in model.parameters())


def test_tied_model_save_pretrained_and_resize(tmp_path):
    model = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0))
    model.save_pretrained(str(tmp_path / "m"))  # tied lm_head / embed_tokens: no shared-tensor error
    model.resize_token_embeddings(model.config.vocab_size + 4)
    assert model.lm_head.weight.shape[0] == model.config.vocab_size


# ------------------------------------------------------------------------------------------ fault 14
@pytest.mark.parametrize("cast", ["half", "bfloat16", "double"])
def test_casting_the_model_keeps_the_adapter_dtype(tmp_path, cast):
    torch.manual_seed(0)
    lin = nn.Linear(8, 5)
    model = qaa.attach(nn.Sequential(lin), qaa.QAAConfig(target_modules=["0"], n_layers=2, seed=0))
    with torch.no_grad():
        model[0].qaa_out["default"].weight.normal_()
    reference = copy.deepcopy(model[0])  # float32 throughout
    dtype = {"half": torch.float16, "bfloat16": torch.bfloat16, "double": torch.float64}[cast]
    model.half() if cast == "half" else model.to(dtype)
    layer = model[0]
    assert layer.base_layer.weight.dtype == dtype
    assert layer.qaa_theta["default"].dtype == torch.float32
    assert layer.qaa_out["default"].weight.dtype == torch.float32
    assert torch.equal(layer.qaa_theta["default"], reference.qaa_theta["default"])
    x = torch.randn(3, 8).to(dtype)
    y = model(x)
    expected = layer.base_layer(x) + reference.branch(x.float(), "default").to(dtype)
    assert y.dtype == dtype
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    qaa.save_adapter(model, str(tmp_path / "a"))
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float32 for t in load_file(str(tmp_path / "a" / "adapter_model.safetensors")).values())


# ------------------------------------------------------------------------------------------ property test
def test_random_sequences_run_the_active_adapter_alone(tmp_path):
    rng = random.Random(0)
    base = logits(model_and_ids())
    base_sd = base_state(model_and_ids())
    targets = [["q_proj"], ["v_proj"], ["q_proj", "v_proj"]]
    for trial in range(4):
        model = model_and_ids()
        saved = {}
        counter = 0
        for step in range(7):
            names = sorted(getattr(model, "qaa_configs", {}))
            op = rng.choice(["attach", "attach", "load", "set", "disable", "detach_adapter", "detach"])
            if op == "attach" or (op in ("set", "detach_adapter") and not names):
                counter += 1
                name = f"a{counter}"
                qaa.attach(model, qaa.QAAConfig(target_modules=rng.choice(targets), n_layers=1, seed=counter),
                           adapter_name=name, is_trainable=rng.random() < 0.5)
                randomise(model, name, counter)
                folder = tmp_path / f"t{trial}-{name}"
                qaa.save_adapter(model, str(folder), name)
                saved[name] = folder
            elif op == "load" and saved:
                src = rng.choice(sorted(saved))
                counter += 1
                qaa.load_adapter(model, str(saved[src]), f"l{counter}", is_trainable=rng.random() < 0.5)
            elif op == "set":
                qaa.set_adapter(model, rng.choice(names), is_trainable=rng.choice([None, True, False]))
            elif op == "disable":
                with qaa.disable_adapter(model):
                    torch.testing.assert_close(logits(model), base, rtol=0, atol=0)
            elif op == "detach_adapter":
                qaa.detach_adapter(model, rng.choice(names))
            elif op == "detach":
                qaa.detach(model)
                after = model.state_dict()
                assert after.keys() == base_sd.keys()
                assert all(torch.equal(after[k], base_sd[k]) for k in base_sd)
            active = getattr(model, "qaa_active_adapter", None)
            for _, layer in qaa.qaa_layers(model):
                assert layer.active_adapter == (active if active in layer.qaa_configs else None)
            torch.testing.assert_close(logits(model), reference_logits(model, active) if active else base,
                                       rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ faults 8 and 16
def test_failing_attach_leaves_the_model_as_it_was(monkeypatch):
    model = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0), adapter_name="a")
    model.lm_head.weight.requires_grad_(True)
    before_sd, before_grad = base_state(model), trainable(model)
    before_modules = [(n, type(m)) for n, m in model.named_modules()]
    original, calls = qaa.QAALayer.add_adapter, {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated failure while attaching")
        return original(self, *a, **k)

    monkeypatch.setattr(qaa.QAALayer, "add_adapter", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        qaa.attach(model, qaa.QAAConfig(n_layers=1, seed=1), adapter_name="b")
    monkeypatch.undo()
    assert [(n, type(m)) for n, m in model.named_modules()] == before_modules
    assert trainable(model) == before_grad and sorted(model.qaa_configs) == ["a"]
    after = model.state_dict()
    assert after.keys() == before_sd.keys() and all(torch.equal(after[k], before_sd[k]) for k in after)
    assert all(l.active_adapter == "a" for _, l in qaa.qaa_layers(model))


def test_compiled_model_saves_the_uncompiled_names(tmp_path):
    model = qaa.attach(model_and_ids(), qaa.QAAConfig(n_layers=1, seed=0))
    compiled = torch.compile(model)  # not run: compiling is not needed to save
    qaa.save_adapter(compiled, str(tmp_path / "a"))
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "a" / "adapter_model.safetensors")).keys()
    assert keys and not any("_orig_mod" in k for k in keys)
    qaa.load_adapter(model_and_ids(), str(tmp_path / "a"))
