"""Fixtures of the experiment tests: a tiny Llama saved as a local model folder, and small injected tasks."""
from pathlib import Path

import pytest

import qaa.experiments.tasks
from support import fake_examples, fake_task_registry, tiny_llama


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    texts = [e.input for t in ("e2e", "webnlg") for e in fake_examples(t)]
    texts += [r for t in ("e2e", "webnlg") for e in fake_examples(t) for r in e.references]
    model, tok = tiny_llama(seed=0, texts=texts)
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fake_tasks():
    mp = pytest.MonkeyPatch()
    mp.setattr(qaa.experiments.tasks, "TASKS", fake_task_registry())
    yield
    mp.undo()
