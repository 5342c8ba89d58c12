"""Tests for qaa.experiments.bigbench (the optional GEM source): archive extraction, cache checksums, grouping.

All but the ``slow`` tests use a small fake bigbench archive built in ``tmp_path``; nothing is downloaded.
"""
import hashlib
import io
import json
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import qaa.experiments.bigbench as data
from qaa.experiments.bigbench import TASKS, ensure_task, load_task
from qaa.experiments.cache import cache_dir
from qaa.experiments.data import Example, split_by_input

TOP = "bigbench-1.0.0/bigbench/benchmark_tasks"

FAKE_TASKS = {
    "e2e_nlg": {"name": "e2e_nlg", "examples": [
        {"input": "name: A, food: Thai", "target": "A serves Thai food.", "comment": "0"},
        {"input": "name: B, area: riverside", "target": "B is by the riverside.", "comment": "1"},
        {"input": "name: A, food: Thai", "target": " A is a Thai place. ", "comment": "2"},
        {"input": "name: A, food: Thai", "target": "A serves Thai food.", "comment": "3"},   # duplicate
        {"input": "name: C", "target": "", "comment": "4"},                                # no reference
        {"input": "name: B, area: riverside", "target": "Find B near the river.", "comment": "5"},
    ]},
    "webnlg_en": {"name": "webnlg_en", "examples": [
        {"input": "(X | capital | Y)", "target": ["Y is the capital of X.", "X's capital is Y."]},
        {"input": "(P | birthPlace | Q)", "target": ["P was born in Q."]},
    ]},
    "xsum": {"name": "xsum", "examples": [{"input": "Long article.\nSecond line.", "target": "Summary."}]},
    "common_gen": {"name": "common_gen", "examples": [
        {"input": "dog ball catch", "target": ["The dog catches the ball.", "A dog caught a ball."]}]},
}


def _add(tar, name, payload: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_sdist(path: Path, tasks=FAKE_TASKS, extra=True) -> Path:
    """A bigbench-like source archive with GEM task files (and unrelated members when ``extra``)."""
    with tarfile.open(path, "w:gz") as tar:
        if extra:
            _add(tar, "bigbench-1.0.0/setup.py", b"print('not run')\n")
            _add(tar, f"{TOP}/gem/asset/task.json", json.dumps({"examples": []}).encode())
            _add(tar, f"{TOP}/other_task/task.json", json.dumps({"examples": []}).encode())
        for name, body in tasks.items():
            _add(tar, f"{TOP}/gem/{name}/task.json", json.dumps(body).encode())
    return path


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    archive = make_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    cache = tmp_path / "cache"
    monkeypatch.setenv("QAA_CACHE_DIR", str(cache))
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(archive))
    return archive, cache


def _task_file(cache: Path, name: str) -> Path:
    return cache / "bigbench-1.0.0" / "gem" / name / "task.json"


def _manifest(cache: Path) -> dict:
    return json.loads((cache / "bigbench-1.0.0" / "manifest.json").read_text())["files"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ cache

def test_cache_dir_from_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("QAA_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QAA_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "qaa"


def test_load_task_groups_all_references(fake_env):
    assert load_task("e2e_nlg") == [
        Example("name: A, food: Thai", ("A serves Thai food.", "A is a Thai place.")),
        Example("name: B, area: riverside", ("B is by the riverside.", "Find B near the river.")),
    ]
    assert load_task("webnlg_en") == [
        Example("(X | capital | Y)", ("Y is the capital of X.", "X's capital is Y.")),
        Example("(P | birthPlace | Q)", ("P was born in Q.",)),
    ]
    assert load_task("xsum") == [Example("Long article.\nSecond line.", ("Summary.",))]
    assert load_task("e2e_nlg") == load_task("e2e_nlg")


def test_only_task_files_are_extracted_with_checksums(fake_env):
    _, cache = fake_env
    path = ensure_task("common_gen")
    assert path == _task_file(cache, "common_gen")
    written = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert written == sorted([f"bigbench-1.0.0/gem/{t}/task.json" for t in TASKS]
                             + ["bigbench-1.0.0/manifest.json", "bigbench-1.0.0/.lock"])
    manifest = _manifest(cache)
    assert set(manifest) == {f"gem/{t}/task.json" for t in TASKS}
    for t in TASKS:
        f = _task_file(cache, t)
        assert manifest[f"gem/{t}/task.json"]["sha256"] == _sha(f)
        assert json.loads(f.read_text()) == FAKE_TASKS[t]


def test_cached_task_does_not_need_the_archive(fake_env, monkeypatch, tmp_path):
    ensure_task("e2e_nlg")
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(tmp_path / "gone.tar.gz"))
    assert len(load_task("e2e_nlg")) == 2


def test_checksum_mismatch_triggers_reextraction(fake_env, monkeypatch):
    _, cache = fake_env
    f = ensure_task("e2e_nlg")
    good = f.read_bytes()
    tampered = json.loads(good)
    tampered["examples"][0]["target"] = "Tampered."
    f.write_text(json.dumps(tampered))
    calls = []
    real_extract = data._extract
    monkeypatch.setattr(data, "_extract", lambda *a: calls.append(a[1]) or real_extract(*a))
    examples = load_task("e2e_nlg")
    assert calls == [["e2e_nlg"]]                 # only the damaged file is extracted again
    assert f.read_bytes() == good
    assert examples[0].references == ("A serves Thai food.", "A is a Thai place.")
    assert _manifest(cache)["gem/e2e_nlg/task.json"]["sha256"] == _sha(f)


def test_missing_file_or_broken_manifest_is_repaired(fake_env):
    _, cache = fake_env
    ensure_task("xsum")
    _task_file(cache, "webnlg_en").unlink()
    assert len(load_task("webnlg_en")) == 2
    (cache / "bigbench-1.0.0" / "manifest.json").write_text("{not json")
    assert len(load_task("xsum")) == 1
    assert _manifest(cache)["gem/xsum/task.json"]["sha256"] == _sha(_task_file(cache, "xsum"))


def test_concurrent_callers_extract_once(fake_env, monkeypatch):
    _, cache = fake_env
    calls = []
    lock = threading.Lock()
    real_extract = data._extract

    def counting(*args):
        with lock:
            calls.append(list(args[1]))
        return real_extract(*args)

    monkeypatch.setattr(data, "_extract", counting)
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(ensure_task, TASKS * 2))
    assert len(calls) == 1 and sorted(calls[0]) == sorted(TASKS)
    manifest = _manifest(cache)
    for t, p in zip(TASKS * 2, paths):
        assert p == _task_file(cache, t) and manifest[f"gem/{t}/task.json"]["sha256"] == _sha(p)
    assert not list(cache.rglob("*.tmp"))


def test_unknown_task_and_bad_archives(fake_env, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        ensure_task("squad")
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(FileNotFoundError, match="QAA_BIGBENCH_SDIST"):
        ensure_task("e2e_nlg")
    not_tar = tmp_path / "not.tar.gz"
    not_tar.write_bytes(b"this is not an archive")
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(not_tar))
    with pytest.raises(RuntimeError, match="could not read"):
        ensure_task("e2e_nlg")
    partial = make_sdist(tmp_path / "partial.tar.gz", tasks={"xsum": FAKE_TASKS["xsum"]})
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(partial))
    with pytest.raises(RuntimeError, match="no member"):
        ensure_task("e2e_nlg")


def test_no_archive_is_an_error_that_says_what_to_do_and_downloads_nothing(fake_env, monkeypatch):
    """The registry no longer serves bigbench 1.0.0: without $QAA_BIGBENCH_SDIST or a cached archive a GEM task
    is an error naming the variable and the vendored tasks, and no process (pip) is started."""
    import subprocess

    monkeypatch.delenv("QAA_BIGBENCH_SDIST")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    with pytest.raises(FileNotFoundError, match="QAA_BIGBENCH_SDIST") as err:
        ensure_task("e2e_nlg")
    assert "no longer serves" in str(err.value) and "e2e, webnlg" in str(err.value)


# ------------------------------------------------------------------------------------------------ real data

@pytest.mark.slow
def test_real_gem_tasks():
    """The real bigbench 1.0.0 archive ($QAA_BIGBENCH_SDIST or the cache); skipped without it."""
    import os

    if not os.environ.get("QAA_BIGBENCH_SDIST") and not (cache_dir() / "downloads" / "bigbench-1.0.0.tar.gz").is_file():
        pytest.skip("the bigbench 1.0.0 archive is not here (the registry no longer serves it; set QAA_BIGBENCH_SDIST)")
    e2e = load_task("e2e_nlg")
    raw = json.loads(ensure_task("e2e_nlg").read_text())["examples"]
    assert len(raw) == 1000 and len(e2e) == 213
    assert _sha(ensure_task("e2e_nlg")) == "9e80fbbf1bca5d4c8cdc6d264c0137efda5bcd2ecb2f5a47ea6552cc93531329"
    assert sum(len(e.references) for e in e2e) == len({(r["input"], r["target"]) for r in raw})
    web = load_task("webnlg_en")
    assert len(web) == 1001 and sum(len(e.references) for e in web) == 2907
    assert len(load_task("xsum")) == 1001 and len(load_task("common_gen")) == 499
    train, test = split_by_input(e2e, 0.2, seed=0)
    assert len(test) == round(0.2 * 213) and not {e.input for e in train} & {e.input for e in test}
