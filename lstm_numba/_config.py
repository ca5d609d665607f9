"""Compile options shared by every kernel: one place to change them.

Fast-math without ``nnan``/``ninf``: the compiler may fuse multiply-adds and reorder signs, but NaN
and infinity keep their IEEE meaning, so NaN in gives NaN out. ``error_model="numpy"`` drops the
zero check Python semantics put on every division; that check keeps LLVM from vectorizing loops.
"""

import warnings

from numba import njit

FASTMATH = {"nsz", "arcp", "contract", "afn"}


EQUATION_OPTIONS = {"forceinline": True, "fastmath": FASTMATH, "error_model": "numpy"}
"""Scalar equations: compiled once per signature and inlined into their callers by LLVM
(``forceinline``), so the caller's loop vectorizes through them on the CPU; numba-cuda compiles them
as device functions, which NVVM inlines likewise. (Inlining Numba's IR instead, ``inline=``, makes
Numba type every inlined copy again: the CUDA sequence kernel took 50 s to compile that way, 1.8 s
this way, with the same PTX.)"""


def _cache_probe():
    """Compiled by nothing: ``disk_cache_available`` decorates it to ask Numba for a cache."""


def disk_cache_available():
    """Whether Numba finds a writable directory for the on-disk cache of this package's kernels:
    ``NUMBA_CACHE_DIR``, the package's own ``__pycache__``, or the user's cache directory. Where
    it finds none (a read-only install run by a user without a writable home, as in some
    containers), Numba refuses ``cache=True`` when a function is decorated, i.e. on import."""
    try:
        njit(cache=True)(_cache_probe)
    except RuntimeError:
        return False
    return True


CACHE = disk_cache_available()
"""``cache=`` of every compiled kernel: on disk where Numba can write, so that a second process
loads the kernels instead of compiling them; else nothing is cached (with a warning)."""
if not CACHE:
    warnings.warn(
        "lstm_numba: Numba finds no writable directory for its on-disk cache (the package's "
        "directory and the user's cache directory are read-only), so every process compiles "
        "the kernels again on its first call; set NUMBA_CACHE_DIR to a writable directory to "
        "keep them",
        RuntimeWarning,
        stacklevel=1,
    )

KERNEL_OPTIONS = {"cache": CACHE, "nogil": True, "fastmath": FASTMATH, "error_model": "numpy"}
"""Array kernels: cached on disk (``CACHE``), so a second process loads them instead of
compiling."""

REDUCTION_KERNEL_OPTIONS = {**KERNEL_OPTIONS, "fastmath": FASTMATH | {"reassoc"}}
"""Dot-product kernels: ``reassoc`` lets LLVM split a sum into vector lanes (BLAS reorders its sums
the same way)."""
