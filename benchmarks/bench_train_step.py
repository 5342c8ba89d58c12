"""One fine-tuning step on SmolLM2-135M-Instruct: QAA vs LoRA (r=8) on q_proj and v_proj, same batch and
sequence length, measured in one process. Prints step time and peak memory of each and QAA's ratios.

    python benchmarks/bench_train_step.py [--batch 8] [--seq 64] [--steps 5] [--random-init] [--json out.json]
                                          [--loaded] [--peak-gflops GFLOPS_PER_CORE]

--random-init builds the model from SmolLM2-135M's configuration (benchmarks/smollm2_135m_config.json) with
random weights (seed 0): the same architecture and cost, no weights to download or carry (GPU machines).

Memory: on CUDA, the peak of torch.cuda.max_memory_allocated during the step above what was allocated before
it (targets on a GPU: wall <= 1.10x, memory <= 1.05x); on CPU, the bytes autograd saves for the
backward pass (activations, exact) plus trainable parameters, their gradients and AdamW state, and the
sampled peak RSS increase. Methods alternate step by step so that machine noise hits both alike; the median
step time is reported. "PASSED" when both runs produce finite losses and QAA's logits at step 0 equal the base
model's.

Load: the 1-, 5- and 15-minute load averages are read when the script starts, before torch loads, and printed
and stored with the result. Without them the script measures nothing and prints no ratio; with a 1-minute load
above 0.5 per core (the cores this process may use) it refuses, unless ``--loaded`` asks to record a loaded
measurement, which every ratio line and the JSON (``"loaded": true``) then label as such.

Floor: beside the measured ratios, the ratio QAA / LoRA would be if the engine ran at its FLOP floor (CPU only):
the engine's calls inside each QAA step are timed (wall and process CPU), its flops counted (per state and
rotation, 6 flops per amplitude pair forward and 22 in the backward, which recomputes the forward: 573 kflop per
state at n = 10, L = 4; benchmarks/README.md), and the engine's time replaced by flops / peak (``--peak-gflops``
per core, default: cpu MHz from /proc/cpuinfo x 32 float32 flop/cycle with AVX2 + FMA, the 256-bit lanes the
kernels are written for). That
bounds how much of the gap engine speed can close on this model; the rest is the adapter's other work.
"""
from __future__ import annotations

import os


def read_load_average():
    """``(1, 5, 15)``-minute load averages, or None where the OS has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (AttributeError, OSError):
        return None


#: Read before torch loads, so that nothing of this run is in it beyond the interpreter's start.
LOAD_AT_START = read_load_average()
#: The most load per core a measurement may start under and still be printed as an idle one.
IDLE_LOAD_PER_CORE = 0.5

# Sleeping (not spinning) OpenMP workers, before torch loads: on a shared machine spinning workers distort both
# wall and CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import statistics
import time

import torch

import qaa
from qaa.experiments.memory import MemoryMonitor, activation_bytes


def trainable_state_bytes(model):
    n = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 4 * n  # parameter + gradient + AdamW exp_avg + exp_avg_sq


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_gate(load, cores: int, allow_loaded: bool):
    """Whether a measurement may run under ``load`` (``(1, 5, 15)``-minute averages or None) on ``cores`` cores.

    Returns ``(run, loaded, message)``: ``run`` False means measure nothing (no load average, or a 1-minute load
    above :data:`IDLE_LOAD_PER_CORE` per core without ``allow_loaded``); ``loaded`` marks a measurement to be
    labelled as loaded; ``message`` says which, with the load. Raises ValueError for ``cores`` < 1.
    """
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    if load is None:
        return False, False, ("no load average can be read on this system: the benchmark prints no ratio without "
                              "the load it ran under")
    per_core = load[0] / cores
    said = f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) on {cores} core(s)"
    if per_core <= IDLE_LOAD_PER_CORE:
        return True, False, f"{said}: {per_core:.2f} per core, idle (<= {IDLE_LOAD_PER_CORE})"
    if allow_loaded:
        return True, True, (f"{said}: {per_core:.2f} per core > {IDLE_LOAD_PER_CORE}: LOADED MEASUREMENT "
                            "(--loaded), not an idle-machine figure")
    return False, True, (f"{said}: {per_core:.2f} per core > {IDLE_LOAD_PER_CORE}, the machine is not idle; rerun "
                         "when it is, or pass --loaded to record a measurement labelled as loaded")


def engine_flops_per_state(n_qubits: int, n_rotations: int):
    """``(forward, backward)`` flops per state of the engine on a circuit of ``n_rotations`` single-qubit real
    rotations on ``n_qubits`` qubits (the ry_cnot_ring ansatz; CNOT rings are permutations, no flops): per
    rotation and amplitude pair, 6 forward, and 22 backward (the recomputed forward's 6 and 16 for the derivative
    and the inverse rotations of state and adjoint). n = 10, 40 rotations: 122,880 + 450,560 = 573,440.
    Raises ValueError for ``n_qubits`` < 1 or ``n_rotations`` < 0."""
    if n_qubits < 1 or n_rotations < 0:
        raise ValueError(f"need n_qubits >= 1 and n_rotations >= 0, got {n_qubits} and {n_rotations}")
    pairs = 2 ** (n_qubits - 1)
    return 6 * n_rotations * pairs, 22 * n_rotations * pairs


def peak_gflops_per_core(cpuinfo: str):
    """``(GFLOP/s per core, how it was derived)``: the float32 peak of the engine's kernels from /proc/cpuinfo
    text: the first ``cpu MHz`` x 32 flop/cycle when the flags hold ``avx2`` and ``fma`` (two 256-bit FMA pipes;
    the kernels are written for 256-bit lanes, so AVX-512 does not raise their floor); ``(None, reason)`` when
    the text does not tell."""
    mhz, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                pass
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    if mhz is None:
        return None, "no cpu MHz in /proc/cpuinfo"
    if not {"avx2", "fma"} <= flags:
        return None, "no AVX2 + FMA in /proc/cpuinfo flags"
    return mhz * 32 / 1000.0, f"cpu MHz {mhz:.0f} x 32 float32 flop/cycle (256-bit FMA x 2; /proc/cpuinfo)"


def floor_ratio(qaa_step: float, engine_s: float, floor_s: float, lora_step: float) -> float:
    """QAA / LoRA if the engine's ``engine_s`` of the QAA step took ``floor_s`` instead. Raises ValueError for
    a non-positive ``lora_step`` or an ``engine_s`` outside ``[0, qaa_step]``."""
    if lora_step <= 0:
        raise ValueError(f"lora_step must be > 0, got {lora_step}")
    if not 0 <= engine_s <= qaa_step:
        raise ValueError(f"engine_s must lie in [0, qaa_step = {qaa_step}], got {engine_s}")
    return (qaa_step - engine_s + floor_s) / lora_step


class EngineClock:
    """Times every engine call (``qaa.engine.fused.forward_features`` / ``backward_features``, which the
    operators look up at call time) while installed, and counts its states and flops."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.flops = 0
        self.states = 0
        self._saved = None

    def reset(self):
        self.wall = self.cpu = 0.0
        self.flops = self.states = 0

    def __enter__(self):
        from qaa.engine import fused

        self._saved = (fused.forward_features, fused.backward_features)
        fwd, bwd = self._saved

        def timed(fn, backward):
            def call(circuit, theta, x, *args, **kwargs):
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    return fn(circuit, theta, x, *args, **kwargs)
                finally:
                    self.wall += time.perf_counter() - t0
                    self.cpu += time.process_time() - c0
                    f, b = engine_flops_per_state(circuit.n_qubits, circuit.n_params)
                    self.flops += x.shape[0] * (b if backward else f)
                    self.states += 0 if backward else x.shape[0]
            return call

        fused.forward_features, fused.backward_features = timed(fwd, False), timed(bwd, True)
        return self

    def __exit__(self, *exc):
        from qaa.engine import fused

        fused.forward_features, fused.backward_features = self._saved
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--random-init", action="store_true",
                    help="SmolLM2-135M architecture with random weights (no model files needed)")
    ap.add_argument("--loaded", action="store_true",
                    help=f"measure even when the 1-minute load average exceeds {IDLE_LOAD_PER_CORE} per core, and "
                         "label the result a loaded measurement")
    ap.add_argument("--peak-gflops", type=float, default=None,
                    help="float32 peak GFLOP/s of one core for the engine's floor (default: from /proc/cpuinfo)")
    args = ap.parse_args()
    cores = usable_cores()
    run, loaded, load_text = load_gate(LOAD_AT_START, cores, args.loaded)
    print(load_text, flush=True)
    if not run:
        print("bench_train_step: no measurement", flush=True)
        return 2
    if args.peak_gflops is not None and not args.peak_gflops > 0:
        ap.error(f"--peak-gflops must be > 0, got {args.peak_gflops}")
    from qaa.tuners.baselines import attach_lora
    from qaa.experiments.base_model import load_base_model

    if args.random_init:
        from transformers import LlamaConfig, LlamaForCausalLM

        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "smollm2_135m_config.json")) as fh:
            config = LlamaConfig(**json.load(fh))
        torch.manual_seed(0)
        base = LlamaForCausalLM(config).float()
    else:
        base, _ = load_base_model()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    with torch.no_grad():
        ref = base.to(device)(ids).logits
    models = {
        "qaa": qaa.attach(copy.deepcopy(base), qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=4, seed=0)),
        "lora": attach_lora(copy.deepcopy(base), target_modules=("q_proj", "v_proj"), r=8, alpha=16),
    }
    del base
    ok = True
    with torch.no_grad():
        ok &= torch.equal(models["qaa"](ids).logits, ref)
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for k, m in models.items()}
    times = {k: [] for k in models}
    cpu_times = {k: [] for k in models}
    act = {}
    peak = {k: 0.0 for k in models}
    cuda_peak = {k: 0.0 for k in models}
    engine = {"wall": [], "cpu": [], "flops": 0, "states": 0}
    clock = EngineClock().__enter__()
    for step in range(args.steps + 1):
        for name, model in models.items():
            model.train()
            clock.reset()
            mon = MemoryMonitor()
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            with mon:
                t0 = time.perf_counter()
                c0 = time.process_time()
                if step == 0:
                    with activation_bytes(exclude=list(model.parameters())) as saved:
                        loss = model(input_ids=ids, labels=ids).loss
                    act[name] = saved.bytes
                else:
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opts[name].step()
                opts[name].zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                dc = time.process_time() - c0
            ok &= bool(torch.isfinite(loss))
            if step > 0 and name == "qaa":
                engine["wall"].append(clock.wall)
                engine["cpu"].append(clock.cpu)
                engine["flops"], engine["states"] = clock.flops, clock.states
            if step > 0:  # step 0 warms up (allocator, optimizer state)
                times[name].append(dt)
                cpu_times[name].append(dc)
                peak[name] = max(peak[name], mon.peak_delta_mb)
                if device == "cuda":
                    cuda_peak[name] = max(cuda_peak[name], (torch.cuda.max_memory_allocated() - before) / 2**20)
    clock.__exit__(None, None, None)
    load_end = read_load_average()
    label = " [LOADED MEASUREMENT]" if loaded else ""
    print(f"SmolLM2-135M, batch {args.batch} x {args.seq} tokens, device {device}, torch threads "
          f"{torch.get_num_threads()}; median of {args.steps} steps (methods interleaved)")
    print(f"load average before the run {LOAD_AT_START[0]:.2f} / {LOAD_AT_START[1]:.2f} / {LOAD_AT_START[2]:.2f}, "
          f"after {'/'.join(f'{x:.2f}' for x in load_end) if load_end else 'unknown'} (1 / 5 / 15 min), "
          f"{cores} core(s){label}")
    rows = {}
    for name, model in models.items():
        tr = sum(p.numel() for p in model.parameters() if p.requires_grad)
        mem = (act[name] + trainable_state_bytes(model)) / 2**20
        rows[name] = {"step_s": statistics.median(times[name]), "step_cpu_s": statistics.median(cpu_times[name]),
                      "trainable": tr, "activation_mb": act[name] / 2**20,
                      "training_state_mb": mem, "peak_rss_delta_mb": peak[name],
                      "cuda_step_peak_mb": cuda_peak[name]}
        print(f"  {name:5s} step {rows[name]['step_s']:.3f} s wall, {rows[name]['step_cpu_s']:.3f} s CPU | trainable {tr:,d} | activations "
              f"{act[name] / 2**20:.1f} MiB | activations + trainable state {mem:.1f} MiB | peak RSS delta "
              f"{peak[name]:.0f} MiB")
    rt = rows["qaa"]["step_s"] / rows["lora"]["step_s"]
    rc = rows["qaa"]["step_cpu_s"] / rows["lora"]["step_cpu_s"]
    rm = rows["qaa"]["training_state_mb"] / rows["lora"]["training_state_mb"]
    print(f"QAA / LoRA{label}: step time {rt:.3f}x wall, {rc:.3f}x CPU (target <= 1.15: "
          f"{'met' if rc <= 1.15 else 'MISSED'}), memory {rm:.3f}x (target <= 1.05)")
    floor = None
    if device == "cpu":
        from qaa import engine as qaa_engine

        peak, peak_source = ((args.peak_gflops, "--peak-gflops") if args.peak_gflops is not None
                             else peak_gflops_per_core(_read("/proc/cpuinfo")))
        threads = qaa_engine.get_num_threads()
        if peak is None:
            print(f"  engine floor: not computed ({peak_source}; pass --peak-gflops)")
        else:
            flops, ew, ec = engine["flops"], statistics.median(engine["wall"]), statistics.median(engine["cpu"])
            floor_cpu = flops / (peak * 1e9)
            floor_wall = floor_cpu / threads
            non_engine_wall = statistics.median(t - e for t, e in zip(times["qaa"], engine["wall"]))
            non_engine_cpu = statistics.median(t - e for t, e in zip(cpu_times["qaa"], engine["cpu"]))
            fw = (non_engine_wall + floor_wall) / rows["lora"]["step_s"]
            fc = (non_engine_cpu + floor_cpu) / rows["lora"]["step_cpu_s"]
            floor = {"peak_gflops_per_core": peak, "peak_source": peak_source, "engine_threads": threads,
                     "engine_states_per_step": engine["states"], "engine_gflop_per_step": flops / 1e9,
                     "engine_wall_s": ew, "engine_cpu_s": ec, "engine_floor_wall_s": floor_wall,
                     "engine_floor_cpu_s": floor_cpu, "floor_time_ratio": fw, "floor_cpu_time_ratio": fc}
            print(f"  engine in the QAA step: {ew:.3f} s wall, {ec:.3f} s CPU for {engine['states']:,d} states "
                  f"({flops / 1e9:.1f} GFLOP); at its floor ({peak:.1f} GFLOP/s per core, {peak_source}; "
                  f"{threads} engine thread(s)) {floor_wall:.3f} s wall, {floor_cpu:.3f} s CPU")
            print(f"QAA / LoRA at the engine's floor{label}: {fw:.3f}x wall, {fc:.3f}x CPU (measured: {rt:.3f}x "
                  f"wall, {rc:.3f}x CPU)")
    else:
        print("  engine floor: CPU only (the GPU floors are bench_fused.py's)")
    if device == "cuda":
        gm = cuda_peak["qaa"] / max(cuda_peak["lora"], 1e-9)
        print(f"  cuda step peak memory: QAA {cuda_peak['qaa']:.1f} MiB, LoRA {cuda_peak['lora']:.1f} MiB ({gm:.3f}x)")
        print(f"{'PASS' if rt <= 1.10 else 'FAIL'} GPU train step QAA/LoRA wall {rt:.3f}x (target <= 1.10)")
        print(f"{'PASS' if gm <= 1.05 else 'FAIL'} GPU train step QAA/LoRA peak memory {gm:.3f}x (target <= 1.05)")
    print("PASSED" if ok else "FAILED")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "time_ratio": rt, "cpu_time_ratio": rc, "memory_ratio": rm, "batch": args.batch, "seq": args.seq,
                       "device": device, "load_average_before": LOAD_AT_START, "load_average_after": load_end,
                       "cores": cores, "loaded": loaded, "engine_floor": floor}, f, indent=2)
    return 0 if ok else 1


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


if __name__ == "__main__":
    raise SystemExit(main())
