"""Issue 22: adapter names that are paths, checkpoints that load the wrong adapter, silent forward-mode
gradients, unchecked config types, the standard FSDP checkpoint API, concurrent saves, huge declared tensors,
and the adapters saved before these changes. One test (or class) per fault; each fails on the code before the
issue's changes."""
import json
import math
import os
import struct
import warnings

import pytest
import torch
from torch import nn

import qaa
from qaa.tuners.qaa.trainer import adapter_folders, extract_adapter
from fixture_model import fixture_input, fixture_model, set_fixture_adapter

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 5))


X = torch.linspace(-2, 2, 24).reshape(3, 8)


def out(model, x=X):
    with torch.no_grad():
        return model(x)


def randomise(model, name, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in qaa.qaa_layers(model):
            if name in layer.qaa_configs:
                layer.qaa_theta[name].copy_(torch.randn(layer.qaa_theta[name].shape, generator=g))
                layer.qaa_out[name].weight.copy_(torch.randn(layer.qaa_out[name].weight.shape, generator=g))


def adapter_tensors(model, name):
    return {f"{n}.{k}": t.detach().clone() for n, layer in qaa.qaa_layers(model) if name in layer.qaa_configs
            for k, t in (("theta", layer.qaa_theta[name]), ("P", layer.qaa_out[name].weight))}


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def two_adapter_model():
    m = mlp()
    qaa.attach(m, qaa.QAAConfig(target_modules=["0", "2"], n_layers=1), "a")
    randomise(m, "a", 1)
    qaa.attach(m, qaa.QAAConfig(target_modules=["0", "2"], n_layers=1), "b")
    randomise(m, "b", 2)
    return m


def write_checkpoint(model, directory):
    """The layout QAATrainer writes (its _write_adapters): the active adapter at the root, the others nested."""
    for name, folder in adapter_folders(model, directory).items():
        qaa.save_adapter(model, folder, name)


# ---------------------------------------------------------------- 1. names that are paths
BAD_NAMES = ["", "/data/run1", "../x", "..", ".", "a/b", "a\\b", "a.b", ".hidden", "-x", "x" * 65, "a b", 3, None]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_1_path_like_names_refused_at_every_entry_point(tmp_path, name):
    victim = tmp_path / "data"
    victim.mkdir()
    m = mlp()
    qaa.save_adapter(qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "ok"), str(tmp_path / "ad"),
                     "ok")
    with pytest.raises(ValueError, match="adapter name"):
        qaa.attach(m, qaa.QAAConfig(target_modules=["0"], n_layers=1), name)
    with pytest.raises(ValueError, match="adapter name"):
        qaa.load_adapter(m, str(tmp_path / "ad"), adapter_name=name)
    with pytest.raises(ValueError, match="adapter name"):
        extract_adapter(str(tmp_path / "ad"), str(tmp_path / "out"), adapter_name=name)
    assert not list(qaa.qaa_layers(m))
    assert os.listdir(victim) == [] and not (tmp_path / "out").exists()


def test_1_save_pretrained_and_checkpoint_folders_stay_inside(tmp_path):
    # The name the issue used: an absolute path, which os.path.join would follow out of the output folder.
    m = mlp()
    with pytest.raises(ValueError, match="adapter name"):
        qaa.load_adapter(m, str(tmp_path), adapter_name=str(tmp_path / "run1"), is_trainable=True)
    m = two_adapter_model()
    folders = adapter_folders(m, str(tmp_path / "ckpt"))
    for folder in folders.values():
        assert os.path.commonpath([folder, str(tmp_path / "ckpt")]) == str(tmp_path / "ckpt")


# ---------------------------------------------------------------- 2. any name loaded the root adapter
def test_2_checkpoint_loads_the_adapter_of_the_requested_name(tmp_path):
    m = two_adapter_model()
    qaa.set_adapter(m, "a")
    write_checkpoint(m, str(tmp_path / "ckpt"))
    want = {n: adapter_tensors(m, n) for n in ("a", "b")}
    for name in ("a", "b"):
        fresh = qaa.load_adapter(mlp(), str(tmp_path / "ckpt"), adapter_name=name)
        assert_same_tensors(adapter_tensors(fresh, name), want[name])
        into = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0", "2"], n_layers=1), name)
        qaa.load_adapter_weights(into, str(tmp_path / "ckpt"), name)
        assert_same_tensors(adapter_tensors(into, name), want[name])
        extract_adapter(str(tmp_path / "ckpt"), str(tmp_path / f"x_{name}"), adapter_name=name)
        again = qaa.load_adapter(mlp(), str(tmp_path / f"x_{name}"), adapter_name=name)
        assert_same_tensors(adapter_tensors(again, name), want[name])
    with pytest.raises(ValueError, match=r"holds adapters \['a', 'b'\], none named 'c'"):
        qaa.load_adapter(mlp(), str(tmp_path / "ckpt"), adapter_name="c")


def test_2_a_single_adapter_folder_still_loads_under_another_name(tmp_path):
    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "a")
    randomise(m, "a", 3)
    qaa.save_adapter(m, str(tmp_path / "ad"), "a")
    other = qaa.load_adapter(mlp(), str(tmp_path / "ad"), adapter_name="renamed")
    assert_same_tensors(adapter_tensors(other, "renamed"), adapter_tensors(m, "a"))


# ---------------------------------------------------------------- 3. resume swapped adapters
def test_3_resume_with_another_active_adapter_restores_each_by_name(tmp_path):
    from qaa.tuners.qaa.trainer import QAATrainer

    m = two_adapter_model()
    qaa.set_adapter(m, "a")
    write_checkpoint(m, str(tmp_path / "ckpt"))
    want = {n: adapter_tensors(m, n) for n in ("a", "b")}
    resumed = two_adapter_model()
    randomise(resumed, "a", 10)
    randomise(resumed, "b", 11)
    qaa.set_adapter(resumed, "b")  # another adapter active at resume than at save
    QAATrainer._load_adapters(None, str(tmp_path / "ckpt"), resumed)
    for n in ("a", "b"):
        assert_same_tensors(adapter_tensors(resumed, n), want[n])
    assert resumed.qaa_active_adapter == "b"


# ---------------------------------------------------------------- 4. forward-mode AD
def test_4_forward_mode_ad_raises_instead_of_a_zero_tangent():
    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "a")
    randomise(m, "a", 1)
    layer = m[0]
    theta = layer.qaa_theta["a"].detach().clone()

    def f(th):
        return torch.func.functional_call(layer, {"qaa_theta.a": th}, (X,))

    for call in (lambda: torch.func.jvp(f, (theta,), (torch.ones_like(theta),)),
                 lambda: torch.func.jacfwd(f)(theta)):
        with pytest.raises(NotImplementedError, match="adjoint.*reverse mode"):
            call()
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level(), pytest.raises(NotImplementedError, match="forward-mode"):
        f(fwAD.make_dual(theta, torch.ones_like(theta)))
    with pytest.raises(NotImplementedError, match="torch.autograd"):
        torch.func.jacrev(f)(theta)
    # reverse mode works and agrees with finite differences (the true tangent is far from 0)
    v = torch.ones_like(theta)
    th = theta.clone().requires_grad_(True)
    y = f(th)
    (jvp_by_reverse,) = torch.autograd.grad(y, th, grad_outputs=torch.ones_like(y))
    eps = 1e-3
    with torch.no_grad():
        fd = (f(theta + eps * v) - f(theta - eps * v)) / (2 * eps)
    torch.testing.assert_close((jvp_by_reverse * v).sum(), fd.sum(), rtol=2e-2, atol=1e-3)
    assert fd.abs().max() > 1e-2


# ---------------------------------------------------------------- 5. QAAConfig types
@pytest.mark.parametrize("field,value", [("rescale_by_norm", "false"), ("rescale_by_norm", 1), ("seed", 1.5),
                                         ("seed", True), ("seed", 2**64), ("n_layers", True), ("n_layers", 2.0),
                                         ("scaling", "2"), ("scaling", True), ("init_std", "0.1"),
                                         ("dropout", None), ("n_qubits", 4.0), ("ansatz", ["ry_cnot_ring"]),
                                         ("input_transform", 1)])
def test_5_config_types_checked(field, value):
    with pytest.raises(ValueError, match=field):
        qaa.QAAConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        qaa.QAAConfig.from_dict({**qaa.QAAConfig().to_dict(), field: value})


def _edit_config(folder, edit):
    """Edit both copies of the config consistently (digests recomputed): only the content checks remain."""
    from safetensors.torch import load_file, save_file

    from qaa.tuners.save_load import CONFIG_DIGEST_KEY, _config_digest

    meta = json.loads((folder / "adapter_config.json").read_text())
    edit(meta)
    meta[CONFIG_DIGEST_KEY] = _config_digest(meta)
    text = json.dumps(meta, indent=2, sort_keys=True)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(text + "\n")
    save_file(tensors, str(folder / "adapter_model.safetensors"),
              metadata={"qaa_config": text, "qaa_sha256": meta["tensors_sha256"]})


@pytest.mark.parametrize("edit,match", [(lambda d: d.update(rescale_by_norm="false"), "rescale_by_norm"),
                                        (lambda d: d.pop("scaling"), r"lacks the field\(s\) \['scaling'\]"),
                                        (lambda d: d.pop("dtype"), "dtype")])
def test_5_saved_config_with_wrong_types_or_missing_fields_refused(tmp_path, edit, match):
    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1, scaling=2.0), "a")
    qaa.save_adapter(m, str(tmp_path / "ad"), "a")
    _edit_config(tmp_path / "ad", edit)
    with pytest.raises(ValueError, match=match):
        qaa.load_adapter(mlp(), str(tmp_path / "ad"), "a")


# ---------------------------------------------------------------- 6. weights without metadata
def test_6_weights_resaved_without_metadata_still_checked(tmp_path):
    from safetensors.torch import load_file, save_file

    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "a")
    randomise(m, "a", 1)
    qaa.save_adapter(m, str(tmp_path / "ad"), "a")
    path = str(tmp_path / "ad" / "adapter_model.safetensors")
    tensors = load_file(path)
    save_file(tensors, path)  # re-saved unchanged without metadata: still the same adapter, loads
    same = qaa.load_adapter(mlp(), str(tmp_path / "ad"), "a")
    assert_same_tensors(adapter_tensors(same, "a"), adapter_tensors(m, "a"))
    tensors["0.theta"] = tensors["0.theta"] + 0.5
    save_file(tensors, path)  # edited and re-saved without metadata
    with pytest.raises(ValueError, match="checksum"):
        qaa.load_adapter(mlp(), str(tmp_path / "ad"), "a")


# ---------------------------------------------------------------- 7. qaa_configs out of sync
def test_7_attached_configs_are_read_only(tmp_path):
    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "default")
    randomise(m, "default", 1)
    before = out(m)
    with pytest.raises(AttributeError, match="read-only"):
        m.qaa_configs["default"].scaling = 3
    with pytest.raises(AttributeError, match="read-only"):
        m[0].qaa_configs["default"].scaling = 3
    with pytest.raises(TypeError):
        m.qaa_configs["x"] = qaa.QAAConfig()
    qaa.save_adapter(m, str(tmp_path / "ad"), "default")
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["scaling"] == 1.0
    torch.testing.assert_close(out(qaa.load_adapter(mlp(), str(tmp_path / "ad"))), before, rtol=0, atol=0)
    # a copy of an attached config is an ordinary config again
    import dataclasses

    copy = dataclasses.replace(m.qaa_configs["default"], scaling=3.0)
    copy.scaling = 4.0
    assert copy.scaling == 4.0 and m.qaa_configs["default"].scaling == 1.0


# ---------------------------------------------------------------- 8. a shared Linear
def test_8_shared_linear_wrapped_at_each_place(tmp_path):
    lin = nn.Linear(8, 8)
    m = nn.Sequential(lin, nn.Tanh(), lin)
    qaa.attach(m, qaa.QAAConfig(target_modules=["0", "2"], n_layers=1), "a")
    assert [type(c).__name__ for c in m] == ["QAALayer", "Tanh", "QAALayer"]
    assert m[0].base_layer is m[2].base_layer is lin
    randomise(m, "a", 1)
    # each place adds its own branch: reference computed by hand
    h = m[0].base_layer(X) + m[0].branch(X, "a")
    h2 = torch.tanh(h)
    want = lin(h2) + m[2].branch(h2, "a")
    torch.testing.assert_close(out(m), want.detach(), rtol=0, atol=0)
    qaa.save_adapter(m, str(tmp_path / "ad"), "a")
    lin2 = nn.Linear(8, 8)
    lin2.load_state_dict(lin.state_dict())
    m2 = qaa.load_adapter(nn.Sequential(lin2, nn.Tanh(), lin2), str(tmp_path / "ad"), "a")
    torch.testing.assert_close(out(m2), out(m), rtol=0, atol=0)
    qaa.detach(m)
    assert m[0] is lin and m[2] is lin


def test_8_one_qaa_layer_at_two_places_refused():
    m = qaa.attach(nn.Sequential(nn.Linear(8, 8)), qaa.QAAConfig(target_modules=["0"], n_layers=1), "a")
    shared = nn.Sequential(m[0], nn.Tanh(), m[0])
    with pytest.raises(ValueError, match="same QAA layer object"):
        qaa.attach(shared, qaa.QAAConfig(target_modules=["0", "2"], n_layers=1), "b")


# ---------------------------------------------------------------- 10. torch.distributed.checkpoint state dicts
def test_10_get_and_set_model_state_dict_round_trip():
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         set_model_state_dict)

    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0", "2"], n_layers=1), "a")
    randomise(m, "a", 1)
    sd = get_model_state_dict(m)
    assert torch.equal(sd["0.weight"], m[0].base_layer.weight) and "0.qaa_theta.a" in sd
    other = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0", "2"], n_layers=1), "a")
    with torch.no_grad():
        other[0].base_layer.weight.add_(1.0)
    set_model_state_dict(other, {k: v.clone() for k, v in sd.items()}, options=StateDictOptions(strict=True))
    torch.testing.assert_close(out(other), out(m), rtol=0, atol=0)
    # the full state dict on CPU, as accelerate's FSDP2 saving asks for it
    full = get_model_state_dict(m, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    assert set(full) == set(m.state_dict())


# ---------------------------------------------------------------- 11. names that are module attributes
@pytest.mark.parametrize("name", ["train", "training", "to", "forward", "state_dict", "keys", "update"])
def test_11_reserved_names_refused_with_the_list(name):
    m = mlp()
    with pytest.raises(ValueError, match=r"reserved.*Reserved names: .*\btrain\b"):
        qaa.attach(m, qaa.QAAConfig(target_modules=["0"], n_layers=1), name)
    assert not list(qaa.qaa_layers(m))
    from qaa.tuners.qaa.config import reserved_adapter_names

    assert {"train", "training", "to", "forward", "state_dict"} <= reserved_adapter_names()


# ---------------------------------------------------------------- 12. a kill between the two renames
def test_12_config_only_change_interrupted_between_renames_loads_new_adapter(tmp_path):
    from qaa.tuners import save_load

    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "a")
    randomise(m, "a", 1)
    qaa.save_adapter(m, str(tmp_path / "ad"), "a")
    old_config = (tmp_path / "ad" / "adapter_config.json").read_text()
    # the same tensors under another config (scaling 2): only the config changed
    m2 = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1, scaling=2.0), "a")
    with torch.no_grad():
        m2[0].qaa_theta["a"].copy_(m[0].qaa_theta["a"])
        m2[0].qaa_out["a"].weight.copy_(m[0].qaa_out["a"].weight)
    real = os.replace

    def killed_after_first_rename(src, dst):
        real(src, dst)
        if str(dst).endswith(save_load.ADAPTER_WEIGHTS):
            raise KeyboardInterrupt  # the kill: the config's rename never happens

    save_load.os.replace = killed_after_first_rename
    try:
        with pytest.raises(KeyboardInterrupt):
            qaa.save_adapter(m2, str(tmp_path / "ad"), "a")
    finally:
        save_load.os.replace = real
    assert (tmp_path / "ad" / "adapter_config.json").read_text() == old_config
    with pytest.warns(RuntimeWarning, match="another save"):
        loaded = qaa.load_adapter(mlp(), str(tmp_path / "ad"), "a")
    assert loaded.qaa_configs["a"].scaling == 2.0
    torch.testing.assert_close(out(loaded), out(m2), rtol=0, atol=0)


def test_12_an_edited_config_is_still_refused(tmp_path):
    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "a")
    qaa.save_adapter(m, str(tmp_path / "ad"), "a")
    path = tmp_path / "ad" / "adapter_config.json"
    meta = json.loads(path.read_text())
    meta["scaling"] = 3.0  # edited by hand; its recorded digest no longer matches
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not belong together"):
        qaa.load_adapter(mlp(), str(tmp_path / "ad"), "a")


# ---------------------------------------------------------------- 13. a huge declared tensor
def test_13_huge_declared_tensor_refused_from_the_header(tmp_path):
    import resource

    m = qaa.attach(mlp(), qaa.QAAConfig(target_modules=["0"], n_layers=1), "a")
    qaa.save_adapter(m, str(tmp_path / "ad"), "a")
    path = tmp_path / "ad" / "adapter_model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    huge = 2**31  # 2 GiB, written as a sparse region
    header["extra"] = {"dtype": "U8", "shape": [huge], "data_offsets": [len(data), len(data) + huge]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
        f.truncate(8 + len(text) + len(data) + huge)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="unexpected or missing tensors.*extra"):
        qaa.load_adapter(mlp(), str(tmp_path / "ad"), "a")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 256 * 1024, f"peak memory grew by {grown_kib} KiB"


# ---------------------------------------------------------------- 16. adapters saved before these changes
def attach_fixture_adapters(model):
    """Attach the two fixture adapters' configurations (``a`` on layers 0 and 2, ``b`` on layer 2)."""
    qaa.attach(model, qaa.QAAConfig(target_modules=["0", "2"], n_layers=2, scaling=0.7, rescale_by_norm=True,
                                    seed=3, input_transform="standardize"), "a")
    qaa.attach(model, qaa.QAAConfig(target_modules=["2"], n_layers=1, ansatz="ry_rz_ring_ry", readout="probs",
                                    scaling=1.5, dtype="float64", seed=4), "b")


def closed_form_reference():
    """The fixture model with both fixture adapters attached and given their closed-form values (the values
    the fixtures were written with: phase 1 for ``a``, 2 for ``b``)."""
    ref = fixture_model()
    attach_fixture_adapters(ref)
    set_fixture_adapter(ref, "a", 1)
    set_fixture_adapter(ref, "b", 2)
    return ref


def reference_outputs(x):
    ref = closed_form_reference()
    outputs = {}
    for name in ("a", "b"):
        qaa.set_adapter(ref, name)
        outputs[name] = out(ref, x)
    return outputs


def test_16_format_1_fixtures_load_with_identical_outputs():
    """A format-1 adapter loads to exactly the closed-form values it was written with: its outputs equal, bit
    for bit, those of the closed-form adapter built in this process (same machine, same kernels). The logits
    stored beside the fixtures were computed on the machine that wrote them; float32 matmul results differ in
    the last bits between CPUs (the reduction order follows the SIMD width), so they are compared to float32
    rounding: a few ulps of values near 1."""
    stored = json.load(open(os.path.join(FIXTURES, "expected_logits.json")))["logits"]
    x = fixture_input()
    expected = reference_outputs(x)
    for name in ("a", "b"):
        torch.testing.assert_close(expected[name], torch.tensor(stored[name]), rtol=1e-6, atol=1e-6)
    m = qaa.load_adapter(fixture_model(), os.path.join(FIXTURES, "adapter_v1"), "a")
    torch.testing.assert_close(out(m, x), expected["a"], rtol=0, atol=0)
    # the checkpoint layout (root adapter without a recorded name, the other nested)
    for name in ("a", "b"):
        m = qaa.load_adapter(fixture_model(), os.path.join(FIXTURES, "checkpoint_v1"), name)
        torch.testing.assert_close(out(m, x), expected[name], rtol=0, atol=0)
    # resume from it: the root adapter is told by elimination
    from qaa.tuners.qaa.trainer import QAATrainer

    ref = fixture_model()
    attach_fixture_adapters(ref)
    QAATrainer._load_adapters(None, os.path.join(FIXTURES, "checkpoint_v1"), ref)
    for name in ("a", "b"):
        qaa.set_adapter(ref, name)
        torch.testing.assert_close(out(ref, x), expected[name], rtol=0, atol=0)
    # the loaded tensors are the closed-form ones, bit for bit (independent of the machine's kernels)
    loaded = qaa.load_adapter(fixture_model(), os.path.join(FIXTURES, "adapter_v1"), "a")
    again = closed_form_reference()
    for (_, got), (_, want) in zip(qaa.qaa_layers(loaded), qaa.qaa_layers(again)):
        torch.testing.assert_close(got.qaa_theta["a"], want.qaa_theta["a"], rtol=0, atol=0)
        torch.testing.assert_close(got.qaa_out["a"].weight, want.qaa_out["a"].weight, rtol=0, atol=0)
