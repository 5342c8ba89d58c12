"""The main job's data path on a fresh machine: an empty qaa cache, a home folder with no caches, and package
downloads made impossible (pip pointed at an index that does not exist). Only the model is supplied, from a
prepared folder, as the model package would supply it; everything else ``qaa finetune`` reads must come from the
repository."""
import json
import os
import subprocess
import sys


def test_finetune_runs_on_an_empty_cache_without_downloads(tiny_model_dir, tmp_path):
    cache, home, out = tmp_path / "cache", tmp_path / "home", tmp_path / "out"
    cache.mkdir()
    home.mkdir()
    env = {**os.environ, "QAA_CACHE_DIR": str(cache), "HOME": str(home), "HF_HOME": str(home / "hf"),
           "XDG_CACHE_HOME": str(home / "xdg"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "",
           "OMP_NUM_THREADS": "1"}
    env.pop("QAA_BIGBENCH_SDIST", None)
    proc = subprocess.run([sys.executable, "-m", "qaa.experiments.cli", "finetune", "--model", str(tiny_model_dir),
                           "--steps", "1", "--batch-size", "2", "--eval-size", "2", "--max-new-tokens", "2",
                           "--threads", "1", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["task"] == "e2e" and summary["train_inputs"] == 492 and summary["test_inputs"] == 2
    assert [f["source"] for f in summary["data"]["files"]] == ["vendored", "vendored"]
    assert all(len(g["references"]) >= 1 for g in summary["generations"])
    assert not any(cache.iterdir())  # nothing fetched or cached
