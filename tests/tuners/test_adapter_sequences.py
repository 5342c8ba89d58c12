"""Issue 22: random sequences of attach / add / set / save / checkpoint / load / resume with valid and invalid
names; every load returns exactly the tensors saved under that name, every invalid step is refused with
ValueError / KeyError and changes nothing."""
import pytest
import torch
from torch import nn

import qaa
from qaa.tuners.qaa.trainer import QAATrainer, adapter_folders

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALID = ["a", "b", "task-1", "x_2"]
INVALID = ["", "..", "../a", "/tmp/a", "a/b", "a.b", "train", "forward", ".h"]
NAMES = st.sampled_from(VALID + INVALID)
FOLDERS = st.sampled_from(["f0", "f1", "f2"])
STEPS = st.one_of(
    st.tuples(st.just("attach"), NAMES), st.tuples(st.just("set"), NAMES),
    st.tuples(st.just("randomise"), NAMES), st.tuples(st.just("save"), NAMES, FOLDERS),
    st.tuples(st.just("checkpoint"), FOLDERS), st.tuples(st.just("load"), NAMES, FOLDERS),
    st.tuples(st.just("resume"), FOLDERS))
CONFIG = qaa.QAAConfig(target_modules=["0", "2"], n_layers=1)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 5))


def tensors(model, name):
    return {f"{n}.{k}": t.detach().clone() for n, layer in qaa.qaa_layers(model) if name in layer.qaa_configs
            for k, t in (("theta", layer.qaa_theta[name]), ("P", layer.qaa_out[name].weight))}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(STEPS, min_size=1, max_size=12), st.integers(0, 2**16))
def test_random_sequences_load_exactly_what_was_saved(tmp_path_factory, steps, seed):
    root = tmp_path_factory.mktemp("seq")
    g = torch.Generator().manual_seed(seed)
    model = mlp()
    saved = {}  # folder -> ("single", name, tensors) | ("checkpoint", {name: tensors})
    for step in steps:
        op, *args = step
        attached = dict(getattr(model, "qaa_configs", {}))
        if op == "attach":
            (name,) = args
            if name not in VALID or name in attached:
                with pytest.raises(ValueError):
                    qaa.attach(model, CONFIG, name)
                assert dict(getattr(model, "qaa_configs", {})) == attached
            else:
                qaa.attach(model, CONFIG, name)
        elif op == "set":
            (name,) = args
            if name in attached:
                qaa.set_adapter(model, name)
            else:
                with pytest.raises(KeyError):
                    qaa.set_adapter(model, name)
        elif op == "randomise" and args[0] in attached:
            with torch.no_grad():
                for _, layer in qaa.qaa_layers(model):
                    layer.qaa_out[args[0]].weight.copy_(torch.randn(layer.qaa_out[args[0]].weight.shape, generator=g))
        elif op == "save" and args[0] in attached:
            name, folder = args
            qaa.save_adapter(model, str(root / folder), name)
            saved[folder] = ("single", name, tensors(model, name))
        elif op == "checkpoint" and attached:
            (folder,) = args
            if (root / folder).exists():
                import shutil

                shutil.rmtree(root / folder)
            for name, path in adapter_folders(model, str(root / folder)).items():
                qaa.save_adapter(model, path, name)
            saved[folder] = ("checkpoint", {n: tensors(model, n) for n in attached})
        elif op == "load":
            name, folder = args
            fresh = mlp()
            entry = saved.get(folder)
            if name not in VALID or entry is None:
                with pytest.raises((ValueError, FileNotFoundError)):
                    qaa.load_adapter(fresh, str(root / folder), name)
                continue
            if entry[0] == "single":
                want = entry[2]
            elif name in entry[1]:
                want = entry[1][name]
            elif len(entry[1]) == 1:
                # a checkpoint of one adapter is a single-adapter folder, which loads under any name
                want = next(iter(entry[1].values()))
            else:
                with pytest.raises(ValueError, match="none named"):
                    qaa.load_adapter(fresh, str(root / folder), name)
                continue
            qaa.load_adapter(fresh, str(root / folder), name)
            assert same(tensors(fresh, name), want)
        elif op == "resume":
            (folder,) = args
            entry = saved.get(folder)
            if entry is None or entry[0] != "checkpoint" or set(entry[1]) != set(attached):
                continue
            active = getattr(model, "qaa_active_adapter", None)
            QAATrainer._load_adapters(None, str(root / folder), model)
            for name, want in entry[1].items():
                assert same(tensors(model, name), want), name
            assert getattr(model, "qaa_active_adapter", None) == active
