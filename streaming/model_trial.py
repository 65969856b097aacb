"""A model on trial: scored and explained in a process of its own before it may serve.

`trial_model(raw)` runs `python -m streaming.model_trial` with the model file on stdin, under a
memory limit (RLIMIT_AS), a CPU limit (RLIMIT_CPU) and a wall-clock timeout. The child loads the
file through every check (`streaming.scoring.load_model`), predicts a batch of varied rows and
explains them with TreeSHAP, as the decider would, and exits 0, or non-zero with one line on
stderr. Whatever the model does to that process (a crash inside libxgboost, a loop, memory without
end), the server that asked gets a ModelError saying what happened, and the model is refused.
"""

from __future__ import annotations

import hashlib
import math
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from streaming.features import FEATURE_NAMES
from streaming.model_file import ModelError
from streaming.protocol import MAX_PRICE, MAX_QUANTITY
from streaming.scoring import load_model
from streaming.state import MAX_CART_LINES, MAX_DISTINCT_PRODUCTS

# A normal model's trial takes about a second, most of it starting Python and importing XGBoost.
TRIAL_SECONDS: Final = 10.0
TRIAL_MEMORY_BYTES: Final = 2 * 2**30  # address space, so shared libraries count in full
TRIAL_ROWS: Final = 64

# The child's exit status when it refused the model (stderr holds the ModelError), and when an
# allocation failed.
_REFUSED: Final = 10
_OUT_OF_MEMORY: Final = 11
# What running out of address space looks like in the child: Python, XGBoost (C++), the loader.
_NO_MEMORY: Final = ("MemoryError", "bad_alloc", "Cannot allocate memory", "failed to map segment")
_ROOT: Final = Path(__file__).resolve().parent.parent
# One thread per library: the trial scores on one thread like the servers do, and every thread
# would reserve address space (stack, allocator arena) against the memory limit.
_ONE_THREAD: Final = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_WHAT_IT_DID: Final = f"a prediction and its explanation (TreeSHAP) of {TRIAL_ROWS} varied rows"

# The largest value of each feature the protocol allows (counts and durations have no bound: a
# long session's).
_MANY: Final = 10_000.0
_LONG: Final = 30 * 86_400.0
_LARGEST: Final[dict[str, float]] = {
    "cart_value": float(MAX_CART_LINES * MAX_QUANTITY * MAX_PRICE),
    "cart_lines": float(MAX_CART_LINES),
    "cart_quantity": float(MAX_CART_LINES * MAX_QUANTITY),
    "distinct_products": float(MAX_DISTINCT_PRODUCTS),
    "seconds_since_add": _LONG,
    "session_seconds": _LONG,
    "hidden": 1.0,
    "checkout_started": 1.0,
    "hour_of_day": 23.0,
}


# --- the parent -------------------------------------------------------------------------------


def trial_command() -> list[str]:
    """The child: this module, run by this interpreter from the project's root."""
    return [sys.executable, "-m", "streaming.model_trial"]


def trial_model(
    raw: bytes, *, seconds: float = TRIAL_SECONDS, memory_bytes: int = TRIAL_MEMORY_BYTES
) -> None:
    """Nothing when the model file loads, predicts and explains in a process of its own within
    `seconds` and `memory_bytes`; ModelError saying what happened otherwise.

    A file that passed is remembered (by digest, with the limits and the command), so activating
    the version just uploaded in the same process costs no second trial.
    """
    key = (hashlib.sha256(raw).digest(), seconds, memory_bytes, tuple(trial_command()))
    with _passed_lock:
        if key in _passed:
            return
    _try_in_a_process(raw, seconds=seconds, memory_bytes=memory_bytes)
    with _passed_lock:
        _passed[key] = None
        while len(_passed) > _REMEMBERED:
            del _passed[next(iter(_passed))]  # the oldest


_REMEMBERED: Final = 64
_passed: dict[tuple[bytes, float, int, tuple[str, ...]], None] = {}  # insertion-ordered
_passed_lock = threading.Lock()


def _try_in_a_process(raw: bytes, *, seconds: float, memory_bytes: int) -> None:
    cpu = max(1, math.ceil(seconds))
    limits = [
        (resource.RLIMIT_AS, (memory_bytes, memory_bytes)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU at the soft limit, SIGKILL a second on
    ]
    process = subprocess.Popen(
        trial_command(),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=_ROOT,
        env=os.environ | _ONE_THREAD,
        preexec_fn=None if _CAN_LIMIT_BY_PID else _limiter(limits),
    )
    with process:
        if _CAN_LIMIT_BY_PID:
            _limit(process, limits)
        # The model is only handed over once the limits hold.
        try:
            _, stderr = process.communicate(raw, timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise ModelError(
                f"The model failed its trial ({_WHAT_IT_DID}, in a separate process): it took "
                f"longer than the limit of {seconds:g} s."
            ) from None
    _judge(process.returncode, stderr.decode(errors="replace"), cpu, memory_bytes)


# Linux sets a child's limits by its pid, from the parent: no Python code then runs between fork
# and exec in a server full of threads, which `preexec_fn` does (and may deadlock there).
_CAN_LIMIT_BY_PID: Final = hasattr(resource, "prlimit")
_Limits = list[tuple[int, tuple[int, int]]]


def _limit(process: subprocess.Popen[bytes], limits: _Limits) -> None:
    for which, limit in limits:
        try:
            resource.prlimit(process.pid, which, limit)
        except ProcessLookupError:
            return  # it has already ended: its status tells
        except OSError as error:
            process.kill()
            raise ModelError(f"The model's trial could not be limited: {error}") from None


def _limiter(limits: _Limits) -> Callable[[], None]:
    def apply() -> None:
        for which, limit in limits:
            resource.setrlimit(which, limit)

    return apply


def _judge(status: int, stderr: str, cpu: int, memory_bytes: int) -> None:
    if status == 0:
        return
    said = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    failed = f"The model failed its trial ({_WHAT_IT_DID}, in a separate process)"
    if status == _OUT_OF_MEMORY or any(sign in stderr for sign in _NO_MEMORY):
        raise ModelError(
            f"{failed}: it needed more memory than the limit of {memory_bytes / 2**20:,.0f} MiB."
        )
    if status == -signal.SIGXCPU:
        raise ModelError(f"{failed}: it used more CPU time than the limit of {cpu} s.")
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else "unknown"
        raise ModelError(
            f"{failed}: it crashed with signal {-status} ({name}), and would crash a server or "
            "worker the same way."
        )
    if status == _REFUSED:
        raise ModelError(said)  # the child's ModelError, as load_model says it
    raise ModelError(f"{failed}: {said or f'it ended with status {status}'}.")


# --- the child --------------------------------------------------------------------------------


def trial_rows() -> npt.NDArray[np.float32]:
    """TRIAL_ROWS rows in FEATURE_NAMES order: zeros, each feature's largest value, sessions of
    every size, and missing values (NaN), which XGBoost sends down each split's default side."""
    rng = np.random.default_rng(0)
    largest = np.array([_LARGEST.get(name, _MANY) for name in FEATURE_NAMES])
    width = len(FEATURE_NAMES)
    # sessions of every size: each value (a whole number, as the features are) spread evenly
    # over the magnitudes up to its largest
    spread = rng.uniform(0, 1, size=(TRIAL_ROWS, width)) * np.log1p(largest)
    rows: npt.NDArray[np.float64] = np.round(np.expm1(spread))
    rows[0] = 0.0
    rows[1] = largest
    for j in range(width):
        rows[2 + j, j] = largest[j]  # one feature at its largest, the others ordinary
    missing = rows[-8:]
    missing[rng.uniform(size=missing.shape) < 0.3] = np.nan
    missing[0] = np.nan
    return rows.astype(np.float32)


def _try(raw: bytes) -> None:
    scorer = load_model(raw, label="trial")
    rows = trial_rows()
    risks = scorer.predict_proba(rows)
    if risks.shape != (len(rows),) or not np.all((risks >= 0) & (risks <= 1)):  # NaN is neither
        raise ModelError(f"The model's risks for the trial rows are not all probabilities: {risks}")
    contributions = scorer.contributions(rows)
    broken = np.flatnonzero(~np.isfinite(contributions).all(axis=1))
    if broken.size:
        raise ModelError(
            f"The model's explanation (TreeSHAP) of {broken.size} of {len(rows)} trial rows is not "
            "a finite number: every split, leaf and cover must be finite, and covers above 0."
        )
    scorer.reasons(rows)


def main() -> int:
    raw = sys.stdin.buffer.read()
    try:
        _try(raw)
    except MemoryError:
        print("MemoryError", file=sys.stderr)
        return _OUT_OF_MEMORY
    except ModelError as error:
        print(" ".join(str(error).split()), file=sys.stderr)
        return _REFUSED
    except Exception as error:  # the parent reports it as the trial's failure
        print(" ".join(f"{type(error).__name__}: {error}".split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
