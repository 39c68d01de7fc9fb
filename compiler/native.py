"""Native CPU kernels (native_kernels.cpp), built once per machine with torch's C++ extension
loader (g++, ninja).

Why: on a small network a PGD step costs about a millisecond, and a small op a few microseconds
of dispatch whatever it computes. LR's `norm_inf(x - x0)` took a fifth of the step in torch's
own ops (7 full-size passes and ~20 ops for a maximum and its gradient), DL2's `exists` over
a finite quantifier (a product) 16 ops for a [batch, 10] product and its gradient, its atoms
(relu(a - b) + xi * [a == b]) 6 ops and 3 backward nodes for a value of 128 numbers, and the
search's own bookkeeping and step (compiler/search.py) 15 ops and 5 full-size passes per step.
Each kernel does the same in one call, with torch's values and gradients bit for bit
(tests/test_native.py; the step's projection aside, where a zero's sign may differ), so results
do not depend on whether the kernels were built.

Where they cannot be built (no compiler or ninja, a read-only cache) or `ROBUSTSPEC_NATIVE=0` is
set, the accessors return None and callers keep torch's ops; a failed build warns once, saying
why. They also return None under torch.func transforms and forward-mode AD (which C++ autograd
Functions do not support). One difference from torch's ops remains: the difference kernel keeps
both operands for its backward pass (torch keeps their difference), so changing x0 in place
between a loss and its backward raises torch's "modified by an inplace operation" error.

The build (about 20 s) lands in `$ROBUSTSPEC_NATIVE_CACHE` (default `~/.cache/robustspec`),
keyed by the source, torch's version, the CPU and the flags; later processes import the built
library directly. One build at a time per folder, under a lock the OS frees if its process is
killed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch

_SOURCE = Path(__file__).with_name("native_kernels.cpp")
# -march=native: the loops vectorise with this CPU's instructions (without it the kernel was
# 3x slower than torch's ops here); the cache key holds the CPU's flags, so a cache shared by
# different machines does not load code built for another CPU
_FLAGS = ["-O3", "-march=native"]
_BUILD_WAIT_S = 600  # a build takes about 20 s; another process's is waited on this long
_lock = threading.Lock()
_state: dict[str, object] = {}  # "module" once built, "error" once a build failed


def enabled() -> bool:
    """False where the user switched native kernels off (ROBUSTSPEC_NATIVE=0)."""
    return os.environ.get("ROBUSTSPEC_NATIVE", "1").strip().lower() not in ("0", "off", "no", "false")


def cache_dir() -> Path:
    base = os.environ.get("ROBUSTSPEC_NATIVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "robustspec")
    return Path(base)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _key() -> str:
    h = hashlib.sha256(_SOURCE.read_bytes())
    h.update(" ".join([torch.__version__, sys.version, platform.machine(), _cpu_flags()]
                      + _FLAGS).encode())
    return h.hexdigest()[:16]


def _find_ninja() -> None:
    """torch's loader runs `ninja` from PATH; the `ninja` wheel's copy serves where the system
    has none (a virtualenv's bin is not on PATH unless it is activated)."""
    if shutil.which("ninja"):
        return
    try:
        import ninja  # the PyPI wheel
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass


def _paths() -> tuple[Path, str, Path]:
    """The build folder, the module's name and the built library's path for this machine."""
    key = _key()
    build = cache_dir() / f"native-{key}"
    name = f"robustspec_native_{key}"
    return build, name, build / f"{name}.so"


def cached() -> bool:
    """Are the kernels built for this machine (without loading or building them)?"""
    return enabled() and _paths()[2].exists()


def cached_status() -> str:
    """status() for processes that never loaded the kernels (a grid's parent): off, built for
    this machine, or not (its processes then ran torch's ops)."""
    if not enabled():
        return "off (ROBUSTSPEC_NATIVE=0)"
    return "built" if cached() else "not built (torch's ops)"


def _import(name: str, path: Path):
    """A built library, imported directly: no ninja run, no lock to wait on."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def _build_lock(build: Path):
    """One build at a time per build folder, by a lock the OS frees when its process dies
    (torch's own lock file outlives a killed build, and its loader then waits forever)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock only
        yield
        return
    with open(build / "robustspec.lock", "w") as f:
        deadline = time.monotonic() + _BUILD_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another process has been building the kernels in "
                                       f"{build} for over {_BUILD_WAIT_S // 60} min") from None
                time.sleep(0.2)
        try:
            # holding the lock, no robustspec process is building here: torch's lock file,
            # if any, was left by a killed build
            (build / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build():
    build, name, library = _paths()
    if library.exists():
        try:
            return _import(name, library)
        except ImportError:  # a library cut short by a killed build: build it again
            pass
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler}) on PATH")
    _find_ninja()
    if shutil.which("ninja") is None:
        raise RuntimeError("no ninja on PATH (pip install ninja)")
    from torch.utils.cpp_extension import load

    build.mkdir(parents=True, exist_ok=True)
    with _build_lock(build):
        if library.exists():  # built by another process while this one waited
            try:
                return _import(name, library)
            except ImportError:
                pass
        print("robustspec: building the native kernels for this machine, once "
              f"(about 20 s) into {build}", file=sys.stderr, flush=True)
        return load(name=name, sources=[str(_SOURCE)], extra_cflags=_FLAGS,
                    build_directory=str(build), verbose=False)


try:  # looked up once: _kernel asks them at every kernel call (usable() says the same)
    from torch._C._functorch import peek_interpreter_stack as _functorch_stack
    from torch.autograd import forward_ad as _forward_ad
except ImportError:  # a torch without these: assume plain autograd
    _functorch_stack, _forward_ad = None, None


def usable() -> bool:
    """False under torch.func transforms (grad, vmap, jacrev) and forward-mode AD, which a C++
    autograd Function does not support: torch's ops serve there."""
    if _functorch_stack is None:
        return True
    return _functorch_stack() is None and getattr(_forward_ad, "_current_level", -1) < 0


def _reason(e: Exception) -> str:
    """One line of why a build failed: the compiler's error, not ninja's closing words."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("ninja:", "FAILED:", "["))]
    errors = [ln for ln in useful if "error" in ln.lower() or "not found" in ln.lower()]
    return (errors or useful or lines or [type(e).__name__])[-1][:300]


def _module():
    mod = _state.get("module")
    if mod is not None:  # loaded: ROBUSTSPEC_NATIVE is read until then (a lookup per kernel call)
        return mod
    if not enabled() or "error" in _state:
        return None
    if "module" not in _state:
        with _lock:
            if "module" not in _state and "error" not in _state:
                try:
                    _state["module"] = _build()
                except Exception as e:  # any failure: torch's ops instead, said once
                    _state["error"] = _reason(e)
                    warnings.warn(
                        "robustspec: the native kernels could not be built "
                        f"({_state['error']}); using torch's ops instead (the same results, "
                        "LR's training 10-20% slower). Set ROBUSTSPEC_NATIVE=0 to skip the "
                        "attempt.", RuntimeWarning, stacklevel=3)
                    return None
    return _state.get("module")


def _kernel(name: str):
    # asked at every kernel call (~80 times a PGD search): the loaded case first, inline
    mod = _state.get("module")
    if mod is None:
        mod = _module()
        if mod is None:
            return None
    if _functorch_stack is not None and (
            _functorch_stack() is not None or getattr(_forward_ad, "_current_level", -1) >= 0):
        return None  # under torch.func transforms or forward-mode AD: torch's ops (usable())
    return getattr(mod, name)


def norm_inf() -> Optional[Callable[[torch.Tensor, int], torch.Tensor]]:
    """`f(v, ndims)`: max |v| over v's trailing ndims dimensions (CPU, float32 or float64),
    differentiable with torch's gradient; None where native kernels are unavailable."""
    return _kernel("norm_inf")


def norm_inf_of_difference() -> Optional[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]]:
    """`f(a, b, ndims)`: max |a - b| over the trailing ndims (a and b of one shape and dtype),
    with the gradients torch's sub, abs and amax give; one pass fewer than norm_inf(a - b)."""
    return _kernel("norm_inf_of_difference")


def norm_inf_split() -> Optional[Callable]:
    """`f(a, b, ndims) -> [norm, ties, first]`: max |a - b| over the trailing ndims without an
    autograd node, with each row's count of ties and first tie (int64), for norm_inf_fold."""
    return _kernel("norm_inf_split")


def norm_inf_fold() -> Optional[Callable]:
    """`f(g, gn, a, b, norm, ties, first, ndims)`: adds the gradient gn of norm_inf(a - b)
    (from norm_inf_split) into a's gradient g in place, as autograd would sum the two; only a
    zero's sign can differ from that sum."""
    return _kernel("norm_inf_fold_")


def box() -> Optional[Callable]:
    """`f(c, r, lower, upper) -> [lo, hi, width, empty, point]`: the box of the ball
    norm_inf(x - c) <= r within [lower, upper] (floats, not NaN), as torch's maximum, minimum
    and subtraction give it, with the rows whose box is empty and whether it is one point."""
    return _kernel("box_")


def relu_sub() -> Optional[Callable]:
    """`f(a, b, w)`: relu(a - b), plus w where a == b if w != 0 (a and b CPU floats of one
    dtype, one shape or either 0-dim), with torch's gradients; None where unavailable."""
    return _kernel("relu_sub")


def abs_sub() -> Optional[Callable]:
    """`f(a, b)`: |a - b| (as relu_sub takes them), with torch's gradients."""
    return _kernel("abs_sub")


def score_rest() -> Optional[Callable]:
    """`f(v, c) -> [score, rest]`: v[c] and the largest v[j] with j != c (argmax(v) == c's
    margin form) for v a CPU float [rows, n] and c int64 [rows], with the gradients torch's
    gather and masked_fill + amax give (torch's bits for n < 16 doubles or 32 floats; longer
    rows: a -0/+0 tie's sign can differ); None where unavailable."""
    return _kernel("score_rest")


def prod_last() -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """`f(v)`: the product over v's last axis (1 to 15 long, where torch multiplies in order),
    with torch's gradient; None where native kernels are unavailable."""
    return _kernel("prod_last")


def better() -> Optional[Callable]:
    """`f(obj, tie, best, best_tie) -> better`: PGD's best-point bookkeeping in one call (bool
    [rows]: a lower objective, a NaN best replaced by any number, ties broken towards the larger
    tie value; best and best_tie updated in place); None where native kernels are unavailable."""
    return _kernel("better_")


def keep_step() -> Optional[Callable]:
    """`f(x, best_x, better, g, lo, hi, size)`: best_x[i] = x[i] where better[i], then (g given)
    x = clamp(x - size * sign(g), lo, hi), in place, one pass; None where unavailable."""
    return _kernel("keep_step_")


def keep_fold_step() -> Optional[Callable]:
    """`f(x, best_x, better, g, lo, hi, size, x0, gn, norm, ties, first) -> [norm, ties,
    first]`: keep_step with the gradient gn of norm_inf(x - x0) (norm_inf_split's leaf; None:
    nothing to fold) folded into the step's reading of g, and the split's answer for the
    stepped x returned; None where unavailable."""
    return _kernel("keep_fold_step_")


def uniform() -> Optional[Callable[[torch.Tensor, int], None]]:
    """`f(out, seed)`: out (contiguous, CPU, float32/64) filled in place with the SplitMix64
    uniform numbers of compiler/search.py's `uniform`; None where unavailable."""
    return _kernel("uniform_")


def status() -> str:
    """One line for diagnostics: built, off, failed (why) or not yet tried."""
    if "module" in _state:  # loaded: used whatever ROBUSTSPEC_NATIVE says now (see _module)
        return "built"
    if not enabled():
        return "off (ROBUSTSPEC_NATIVE=0)"
    if "error" in _state:
        return f"unavailable: {_state['error']}"
    return "built" if "module" in _state else "not built yet (built on first use)"
