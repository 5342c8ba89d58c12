"""Compare bench_engine_cpu builds back to back: each binary runs in turn, `--reps` rounds, and for every case
the lowest forward and forward+VJP time over the rounds is kept (the least disturbed run on a shared machine).

Usage: python benchmarks/compare_builds.py LABEL=PATH [LABEL=PATH ...] [--reps R] [-- BENCH ARGS]
e.g.   python benchmarks/compare_builds.py before=/tmp/old/bench_engine_cpu after=build/bench/benchmarks/bench_engine_cpu \
           --reps 5 -- --quick --threads 1 --cpu-time
Prints one row per case: us/state forward / forward+VJP per binary, then each binary's forward+VJP time
divided by the first binary's. Exits non-zero when a binary does not print PASSED.
"""
import collections
import re
import subprocess
import sys

LINE = re.compile(r"(\S+)\s+(float\d+) n=\s*(\d+) L=(\d+) B=\s*(\d+) \| fwd\s+([\d.]+) us/state.*"
                  r"fwd\+vjp\s+([\d.]+) us/state")


def main(argv):
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    reps = 3
    if "--reps" in argv:
        i = argv.index("--reps")
        reps = int(argv[i + 1])
        del argv[i:i + 2]
    bins = [a.split("=", 1) for a in argv]
    best = collections.defaultdict(dict)
    for _ in range(reps):
        for label, path in bins:
            out = subprocess.run([path] + extra, capture_output=True, text=True).stdout
            if "PASSED" not in out:
                print(out)
                print(f"{label}: benchmark did not pass")
                return 1
            for line in out.splitlines():
                m = LINE.match(line)
                if m:
                    key = f"{m[1]} {m[2]} n={m[3]} L={m[4]} B={m[5]}"
                    f, fv = float(m[6]), float(m[7])
                    old = best[key].get(label, (float("inf"), float("inf")))
                    best[key][label] = (min(old[0], f), min(old[1], fv))
    labels = [label for label, _ in bins]
    print("%-38s " % "case (us/state: fwd / fwd+vjp)" + " ".join("%20s" % l for l in labels)
          + "   fwd+vjp / " + labels[0])
    for key, d in best.items():
        row = "%-38s " % key + " ".join("%9.2f /%9.2f" % d[l] for l in labels)
        row += "   " + " ".join("%.3f" % (d[l][1] / d[labels[0]][1]) for l in labels[1:])
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
