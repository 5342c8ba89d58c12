"""benchmarks/bench_train_step.py: the load gate, the engine's flop count and floor, and the peak from cpuinfo."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("load, cores, allow, expected", [
    ((0.9, 0.5, 0.4), 2, False, (True, False)),    # 0.45 per core: idle
    ((1.0, 0.5, 0.4), 2, False, (True, False)),    # 0.5 per core: the limit itself is idle
    ((1.2, 0.5, 0.4), 2, False, (False, True)),    # 0.6 per core: refused
    ((1.2, 0.5, 0.4), 2, True, (True, True)),      # ... unless asked for, and then labelled
    ((5.4, 5.0, 4.0), 16, False, (True, False)),   # 0.34 per core on 16 cores
    (None, 2, True, (False, False)),               # no load average: never a ratio
])
def test_load_gate(bench, load, cores, allow, expected):
    run, loaded, message = bench.load_gate(load, cores, allow)
    assert (run, loaded) == expected
    if load is not None:
        assert f"{load[0]:.2f}" in message and f"{cores} core(s)" in message
    assert ("LOADED MEASUREMENT" in message) == (run and loaded)
    with pytest.raises(ValueError, match="cores"):
        bench.load_gate((0.1, 0.1, 0.1), 0, False)


def test_engine_flops_match_the_readme_count(bench):
    # n = 10, L = 4 ry_cnot_ring: 40 rotations on 512 amplitude pairs: 40 * 512 * 6 forward, 40 * 512 * 22 back
    assert bench.engine_flops_per_state(10, 40) == (122_880, 450_560)
    assert sum(bench.engine_flops_per_state(10, 40)) == 573_440
    assert bench.engine_flops_per_state(1, 3) == (18, 66)
    with pytest.raises(ValueError):
        bench.engine_flops_per_state(0, 4)


def test_floor_ratio_replaces_the_engines_time(bench):
    # QAA 2.0 s of which the engine 0.6 s; at the floor 0.1 s: (2.0 - 0.6 + 0.1) / LoRA 1.25 = 1.2
    assert bench.floor_ratio(2.0, 0.6, 0.1, 1.25) == pytest.approx(1.2)
    with pytest.raises(ValueError):
        bench.floor_ratio(2.0, 2.5, 0.1, 1.0)
    with pytest.raises(ValueError):
        bench.floor_ratio(2.0, 0.5, 0.1, 0.0)


def test_peak_from_cpuinfo(bench):
    text = "processor\t: 0\ncpu MHz\t\t: 2450.000\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n" \
           "processor\t: 1\ncpu MHz\t\t: 1200.000\n"
    peak, source = bench.peak_gflops_per_core(text)
    assert peak == pytest.approx(78.4) and "2450" in source   # 2.45 GHz x 32 (AVX-512 not used by the kernels)
    assert bench.peak_gflops_per_core("cpu MHz : 2450\nflags : sse2 avx\n") == (None,
                                                                             "no AVX2 + FMA in /proc/cpuinfo flags")
    assert bench.peak_gflops_per_core("flags : avx2 fma\n")[0] is None


@pytest.mark.parametrize("load", [None, (9.0, 9.0, 9.0)])
def test_no_ratio_without_an_idle_load(bench, load, monkeypatch, capsys):
    """Refused before any model is built: no load average, or a loaded machine without --loaded."""
    monkeypatch.setattr(bench, "LOAD_AT_START", load)
    monkeypatch.setattr(bench, "usable_cores", lambda: 2)
    monkeypatch.setattr("sys.argv", ["bench_train_step.py", "--random-init"])
    assert bench.main() == 2
    out = capsys.readouterr().out
    assert "no measurement" in out and "QAA / LoRA" not in out
