"""Issue 22, fault 12: a reader sees the old adapter or the new one, never a refusal, whatever the interleaving
with a process saving into the same folder (weight changes and config-only changes alternate)."""
import os
import subprocess
import sys
import textwrap
import time
import warnings

import torch
from torch import nn

import qaa

DURATION_S = 12.0

SAVER = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    import qaa
    folder, stop_after = sys.argv[1], float(sys.argv[2])
    k, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < stop_after:
        m = nn.Sequential(nn.Linear(8, 6))
        # version k: P holds k // 2 everywhere, scaling 1 + k / 100: consecutive versions alternate between a
        # config-only change (same tensors) and a weights change
        qaa.attach(m, qaa.QAAConfig(target_modules=["0"], n_layers=1, seed=0, scaling=1 + k / 100), "a")
        with torch.no_grad():
            m[0].qaa_out["a"].weight.fill_(k // 2)
        qaa.save_adapter(m, folder, "a")
        k += 1
    print(k)
""")


def test_12_concurrent_save_and_load_never_refused(tmp_path):
    folder = str(tmp_path / "ad")
    m = nn.Sequential(nn.Linear(8, 6))
    qaa.attach(m, qaa.QAAConfig(target_modules=["0"], n_layers=1, seed=0, scaling=1.0), "a")
    qaa.save_adapter(m, folder, "a")  # version 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    saver = subprocess.Popen([sys.executable, "-c", SAVER, folder, str(DURATION_S)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    loads, refusals, mixed = 0, [], []
    t0 = time.monotonic()
    try:
        while saver.poll() is None and time.monotonic() - t0 < DURATION_S + 30:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "another save's config": not a refusal
                try:
                    loaded = qaa.load_adapter(nn.Sequential(nn.Linear(8, 6)), folder, "a")
                except Exception as e:  # noqa: BLE001 - every refusal counts
                    refusals.append(f"{type(e).__name__}: {e}")
                    continue
            loads += 1
            k = round((loaded.qaa_configs["a"].scaling - 1) * 100)
            p = loaded[0].qaa_out["a"].weight
            if not torch.equal(p, torch.full_like(p, k // 2)):
                mixed.append((k, p.flatten()[0].item()))
    finally:
        saver.kill() if saver.poll() is None else None
        out, err = saver.communicate()
    assert saver.returncode == 0, err
    saves = int(out.strip())
    assert saves > 20 and loads > 100, (saves, loads)
    assert not refusals, f"{len(refusals)} of {loads + len(refusals)} loads refused: {refusals[:3]}"
    assert not mixed, f"{len(mixed)} loads mixed a config and tensors of different saves: {mixed[:3]}"
