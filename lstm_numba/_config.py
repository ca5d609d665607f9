"""Compile options shared by every kernel: one place to change them.

Fast-math without ``nnan``/``ninf``: the compiler may fuse multiply-adds and reorder signs, but NaN
and infinity keep their IEEE meaning, so NaN in gives NaN out. ``error_model="numpy"`` drops the
zero check Python semantics put on every division; that check keeps LLVM from vectorizing loops.
"""

FASTMATH = {"nsz", "arcp", "contract", "afn"}

EQUATION_OPTIONS = {"inline": "always", "fastmath": FASTMATH, "error_model": "numpy"}
"""Scalar equations: inlined into their caller, so the caller's loop vectorizes through them."""

KERNEL_OPTIONS = {"cache": True, "nogil": True, "fastmath": FASTMATH, "error_model": "numpy"}
"""Array kernels: cached on disk, so a second process loads them instead of compiling."""

REDUCTION_KERNEL_OPTIONS = {**KERNEL_OPTIONS, "fastmath": FASTMATH | {"reassoc"}}
"""Dot-product kernels: ``reassoc`` lets LLVM split a sum into vector lanes (BLAS reorders its sums
the same way)."""
