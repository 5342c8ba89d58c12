"""Number formatting shared by the report's markdown (intervals, differences, rates, sizes)."""
from __future__ import annotations

import math
import statistics
from typing import Optional

from .. import registry
from ..stats import Interval, signed

#: The line that says which test NLL the report, the log and results.json's ``metrics.nll`` give.
NLL_LINE = ("Test NLL, everywhere (this report, the log, results.json's `metrics.nll`): the mean over test inputs of "
            "each input's NLL (nats per target token over all its references), the quantity the bootstrap "
            "resamples; `metrics.nll_token_weighted` is the other one (every target token of every input weighted "
            "equally).")
#: A BLEU difference is flagged when the two methods' length ratios differ by more than this.
LENGTH_RATIO_FLAG = 0.1


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------

def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _human_bytes(n) -> str:
    if not _finite(n):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _ci(iv: Optional[Interval], digits: int = 2) -> str:
    if iv is None:
        return "-"
    sd = f" ± {iv.seed_sd:.{digits}f}" if iv.seed_sd is not None else ""
    return f"{iv.value:.{digits}f}{sd} [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"


def _diff(iv: Optional[Interval], digits: int = 2) -> str:
    if iv is None:
        return "-"
    if iv.significant():
        mark = ""
    elif iv.excludes_zero():
        mark = " (n.s.†)"
    else:
        mark = " (n.s.)"
    return f"{signed(iv.value, digits)} [{signed(iv.lo, digits)}, {signed(iv.hi, digits)}]{mark}"


def _digits(key: str) -> int:
    """Decimals a metric's differences are printed with (NLL differences are hundredths of a nat)."""
    return 3 if key == "nll" else 2


def _lr(lr: float) -> str:
    """A learning rate with two significant digits (a widened grid holds rates like 0.027)."""
    return f"{lr:.2g}"


def _rate(sel: Optional[dict], method: Optional[str] = None) -> str:
    if not sel or sel.get("status") != "ok":
        return "-"
    ratio = sel.get("theta_lr_ratio", 1.0)
    what = "xi" if method in registry.names() and registry.get(method).ratio_grid else "angles"
    return _lr(sel["lr"]) + (f" ({what} x{ratio:g})" if ratio != 1.0 else "")


def _mean(values) -> Optional[float]:
    vals = [v for v in values if _finite(v)]
    return statistics.fmean(vals) if vals else None


