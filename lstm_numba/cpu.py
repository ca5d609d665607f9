"""CPU kernels: the seed's equations compiled with ``@njit`` over arrays.

Layers of names, from the inside out: scalar equations (``equations``), elementwise ufuncs of them
(for the public gate functions), the fused per-step kernel, and the whole-sequence layer forward.
Nothing here validates its arguments; the plain-Python wrappers in ``gates`` and ``model`` do.
"""

import contextlib
import contextvars
import functools
import itertools
import os
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from numba import config as numba_config
from numba import get_num_threads, njit, prange, threading_layer, vectorize
from numba import set_num_threads as numba_set_num_threads
from numba.core import types
from numba.extending import overload
from threadpoolctl import ThreadpoolController

from lstm_numba import atomics, equations
from lstm_numba._config import (
    CACHE,
    EQUATION_OPTIONS,
    FASTMATH,
    KERNEL_OPTIONS,
    REDUCTION_KERNEL_OPTIONS,
)
from lstm_numba.register_tile import (
    MAX_TILE_ROWS,
    PANELS_PER_TILE,
    empty_panels,
    panel_count,
    panel_width,
    tile_1,
    tile_2,
    tile_3,
    tile_4,
    tile_5,
    transpose_into_panel,
)

_FLOAT_UNARY = ["float32(float32)", "float64(float64)"]
_FLOAT_BINARY = ["float32(float32, float32)", "float64(float64, float64)"]
_FLOAT_QUATERNARY = [
    "float32(float32, float32, float32, float32)",
    "float64(float64, float64, float64, float64)",
]
_UFUNC_SIGNATURES = {
    "sigmoid": _FLOAT_UNARY,
    "tanh": _FLOAT_UNARY,
    "cell_update": _FLOAT_QUATERNARY,
    "hidden_state": _FLOAT_BINARY,
}


def __getattr__(name):
    """``sigmoid``, ``tanh``, ``cell_update``, ``hidden_state``: the equations as NumPy ufuncs for
    float32 and float64 arrays, built on first use (PEP 562): a ufunc compiles all its signatures
    when built, ≈ 3 s on a cold cache that a program running only the model would pay at import."""
    if name not in _UFUNC_SIGNATURES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    options = {"cache": CACHE, "fastmath": FASTMATH}
    ufunc = vectorize(_UFUNC_SIGNATURES[name], **options)(getattr(equations, name).py_func)
    globals()[name] = ufunc
    return ufunc


@functools.cache
def _blas_threads():
    """The thread settings of the BLAS that Numba's ``np.dot`` calls (SciPy's, through
    ``scipy.linalg.cython_blas``), which the drivers hold to one thread (``_BlasOnOneThread``):
    threadpoolctl's controllers of the BLAS libraries under SciPy's installation (the OpenBLAS its
    wheel bundles), or of every BLAS library where none is there (one shared by NumPy and SciPy,
    as conda's). NumPy's own bundled OpenBLAS, which no kernel calls, is left alone: setting its
    threads cost ≈ 2.5 µs a call. Created on first use, after loading SciPy's BLAS: a controller
    only sees the libraries loaded when it is created, and one created at import (before anything
    had loaded SciPy's BLAS) left that BLAS on all its threads inside each of the driver's
    threads, which made the parallel forward ≈ 2× slower."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)

    libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    if not libraries:
        warnings.warn(
            "lstm_numba: threadpoolctl finds no BLAS library in this process, so forwards on "
            "several threads cannot hold BLAS to one thread in each, and may run slower than "
            "on one (NUMBA_NUM_THREADS=1 avoids that)",
            RuntimeWarning,
            stacklevel=2,
        )
    installation = os.path.realpath(os.path.dirname(scipy.__file__))
    inside = (installation + os.sep, installation + ".")  # scipy/… and its wheel's scipy.libs/…
    scipys = [lib for lib in libraries if os.path.realpath(lib.filepath).startswith(inside)]
    return scipys or libraries


@functools.cache
def _blas_thread_functions():
    """``(get, set)`` of the thread count of each library of ``_blas_threads``: for OpenBLAS its
    own C functions, called directly. threadpoolctl's setter (3.8) lets only the first Python
    thread that set OpenBLAS's count set it again and silently ignores the others (its thread
    pool is process-wide), so a server whose worker threads called forwards after the main thread
    had run one got BLAS on all its threads inside each of the driver's threads (1.5–1.7× slower,
    Zen 4); the drivers take turns (``_PARALLEL_FORWARD``) and set each count back, so no two
    threads fight over it. The direct calls also cost ≈ 0.2 µs against threadpoolctl's 0.6–0.9."""
    return [_thread_count_functions(library) for library in _blas_threads()]


def _thread_count_functions(library):
    """``(get, set)`` of a threadpoolctl controller's thread count: OpenBLAS's C functions (their
    names as threadpoolctl looks them up), else the controller's methods."""
    affixes = itertools.product(("", "scipy_"), ("", "64_", "_64"))
    for prefix, suffix in affixes if library.internal_api == "openblas" else ():
        get, set_ = (f"{prefix}openblas_{verb}_num_threads{suffix}" for verb in ("get", "set"))
        if hasattr(library.dynlib, get):
            return getattr(library.dynlib, get), getattr(library.dynlib, set_)
    return library.get_num_threads, library.set_num_threads


class _BlasOnOneThread:
    """BLAS held to one thread while the block runs (the parallel drivers' threads each call it),
    then set back: ≈ 1 µs a call (``_blas_thread_functions``), where threadpoolctl's ``limit``
    took ≈ 20 µs (it reads each library's whole description first)."""

    def __enter__(self):
        functions = _blas_thread_functions()
        self.counts = [get() for get, _ in functions]
        for _, set_ in functions:
            set_(1)

    def __exit__(self, *exception):
        for (_, set_), count in zip(_blas_thread_functions(), self.counts, strict=True):
            set_(count)


_PARALLEL_FORWARD = threading.Lock()
"""One parallel driver at a time in the process. Each runs on all of Numba's threads, so two would
only compete for the same cores, and for the BLAS thread limit, which is process-wide; and
Numba's workqueue threading layer, its fallback where neither OpenMP nor TBB is installed, aborts
the process when two threads launch parallel kernels at once."""

_numba_threads_ran = False
"""Whether a parallel driver has run in this process (``_OnNumbaThreads``)."""


class _OnNumbaThreads(_BlasOnOneThread):
    """For a parallel driver: one at a time (``_PARALLEL_FORWARD``), BLAS on one thread inside
    each of its threads (``_BlasOnOneThread``), and Numba's threads in this thread held to
    ``set_num_threads``'s limit (the driver's work items are no more, but OpenMP would wake the
    others too)."""

    def __enter__(self):
        global _numba_threads_ran
        _PARALLEL_FORWARD.acquire()
        try:
            super().__enter__()
            self.numba_threads = None if _thread_limit is None else get_num_threads()
            if self.numba_threads is not None:
                numba_set_num_threads(min(self.numba_threads, _thread_limit))
        except BaseException:
            _PARALLEL_FORWARD.release()
            raise
        _numba_threads_ran = _numba_threads_ran or _DRY_RUN.get() is None

    def __exit__(self, *exception):
        try:
            if self.numba_threads is not None:
                numba_set_num_threads(self.numba_threads)
            super().__exit__(*exception)
        finally:
            _PARALLEL_FORWARD.release()


def _calling_thread_blas(w_hh):
    """The BLAS threads for a direction of a layer on the calling thread, w_hh (4H, H_out) its
    W_hh. After a parallel driver, GNU OpenMP's workers (Numba's default threading layer) spin
    for a few milliseconds, and BLAS's own threads, whose calls wait for each of them, get a
    core only when a time slice ends: a one-row forward at H = 64 that takes 0.19 ms alone took
    3.8 ms right after a driver call (the same model at B = 1 and B = 8 alternately, as a server
    may well call it), 0.19 ms with BLAS on one thread. So once a driver has run in the process,
    BLAS runs on one thread where W_hh fits a core's L2 (``cache_bytes(2)``), where its threads
    gain nothing alone; beyond, each step's GEMV streams W_hh from L3, where two threads read it
    1.6–1.9× as fast alone, and right after a driver call they come out ahead or at most
    1.4–3.5 ms behind (Zen 4, B = 1, peepholes, ms right after a driver call, BLAS's threads
    against one, and alone with its threads: (T, H) = (100, 128) 4.80 against 1.06, alone 1.08;
    (100, 256) 3.03 against 3.21, 3.19; (100, 384) 7.68 against 6.26, 3.95; (100, 512) 13.8
    against 10.3, 6.4; (300, 512) 27.1 against 32.8, 19.6; (100, 1024) 30.8 against 43.4, 23.8;
    two directions in turn, (1, 64, 768, 768) 21.1 against 26.0, alone 13.9 against 26.4;
    docs/performance.md)."""
    if _numba_threads_ran and w_hh.nbytes <= cache_bytes(2):
        return _BlasOnOneThread()
    return contextlib.nullcontext()


def _started_gnu_openmp():
    """Whether this process has started Numba's threads on GNU OpenMP (libgomp): Numba terminates
    a process forked after that when it launches a parallel kernel ("fork() called from a
    process already using GNU OpenMP, this is unsafe")."""
    try:
        layer = threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return False
    if layer != "omp":
        return False
    from numba.np.ufunc import omppool

    return omppool.openmp_vendor == "GNU"


_FORKED_FROM_GNU_OPENMP = False
"""Whether this process was forked (``os.fork``, multiprocessing's "fork" start method, the
default on Linux before Python 3.14) from one that had started Numba's threads on GNU OpenMP.
Then the parallel driver's work items run one after another, on this thread
(``lstm_layer_forward``), instead of terminating the process."""


def _note_fork():
    """In a forked child: whether the parallel driver may run there, and a fresh lock, since a
    thread of the parent may have held ``_PARALLEL_FORWARD`` at the fork (no thread of the parent
    runs in the child to release it); no driver has run in the child yet (no OpenMP workers of
    its own spin there, ``_calling_thread_blas``)."""
    global _FORKED_FROM_GNU_OPENMP, _PARALLEL_FORWARD, _numba_threads_ran
    _FORKED_FROM_GNU_OPENMP = _FORKED_FROM_GNU_OPENMP or _started_gnu_openmp()
    _PARALLEL_FORWARD = threading.Lock()
    _numba_threads_ran = False


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_note_fork)

_thread_limit = None
"""``set_num_threads``'s limit on a forward's threads, or None: all of Numba's."""


def set_num_threads(threads):
    """The most threads a CPU forward uses from now on, in the whole process, as
    ``torch.set_num_threads``: Numba's threads that run its directions, rows or hidden units
    side by side, and the threads of the BLAS its input projection and GEMV steps call (SciPy's
    OpenBLAS, which this sets to ``threads``). ``numba.set_num_threads`` alone bounds the former
    only, in its own thread; threadpoolctl's ``threadpool_limits`` misses SciPy's BLAS where it
    runs before that library is loaded. A server with one model per process on one core each:
    ``lstm_numba.set_num_threads(1)``. ``threads``: from 1 to ``NUMBA_NUM_THREADS``, the
    threads Numba starts (by default one per CPU)."""
    global _thread_limit
    most = numba_config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads: expected an integer, got {type(threads).__name__}")
    if not 1 <= threads <= most:
        raise ValueError(
            f"threads: expected 1 to NUMBA_NUM_THREADS = {most} (the threads Numba starts), "
            f"got {threads}"
        )
    with _PARALLEL_FORWARD:  # not while a driver holds BLAS to one thread: it sets it back after
        _thread_limit = int(threads)
        for _, set_ in _blas_thread_functions():
            set_(_thread_limit)


def forward_threads():
    """The threads a forward may run on: Numba's count in this thread (``numba.get_num_threads``),
    at most ``set_num_threads``'s limit; one in a process forked after GNU OpenMP started
    (``_FORKED_FROM_GNU_OPENMP``), where Numba's threads cannot run."""
    if _FORKED_FROM_GNU_OPENMP:
        return 1
    threads = get_num_threads()
    return threads if _thread_limit is None else min(threads, _thread_limit)


def thread_settings():
    """What of the threads' settings a plan depends on and this module can read in 0.1 µs
    (``forward_threads`` takes 0.7): ``set_num_threads``'s limit, and whether the process was
    forked after GNU OpenMP started. Numba's own count (``numba.set_num_threads``) is left out:
    a plan for more threads than Numba then runs gives the same results on fewer."""
    return _thread_limit, _FORKED_FROM_GNU_OPENMP


PROJECTION_ROWS = 1024
"""Most rows (time steps × batch rows) whose input projection one GEMM computes: enough for BLAS
to run near its peak (256 rows a GEMM ran (256, 64, 512, 512) 1–3 % slower, Zen 4)."""

PROJECTION_MIN_ROWS = 256
"""Fewest rows a GEMM of the input projection computes (when the sequence has that many)."""

PROJECTION_STEPS = 32
"""Steps a chunk of the input projection covers, within ``PROJECTION_MIN_ROWS`` and
``PROJECTION_ROWS`` rows (``projection_steps``): a bound on the workspace beside x and y for few
rows on long sequences, where 1024 rows was as large as x or y ((1, 2000, 128, 128) allocated
1.82× x + y + weights, (8, 2000, 256, 256) 1.33×; docs/performance.md)."""


@njit(inline="always")
def projection_steps(rows, steps):
    """Steps of ``rows`` batch rows whose input projection one GEMM computes: ``PROJECTION_STEPS``,
    within ``PROJECTION_MIN_ROWS`` and ``PROJECTION_ROWS`` rows, at most ``steps``, at least 1.
    The workspace is then a chunk's rows × (I + 4H), whatever the sequence's length."""
    chunk_rows = min(PROJECTION_ROWS, max(PROJECTION_MIN_ROWS, PROJECTION_STEPS * rows))
    return max(1, min(steps, chunk_rows // max(rows, 1)))


SMALL_PRODUCT_ROWS = 32
"""Below this many rows (but more than one, a GEMV), the input projection and LSTMP's projection
run in the dot-product tile (``dot_tile_product``) on the weights as they are; from it on, in
BLAS, which packs the weights on every call. At 2–16 rows the tile is 1.3–4× faster than BLAS on
two threads, level at 32; for one row BLAS's GEMV is 1.2–2.8× faster than the tile (measured on
a Zen 3, docs/performance.md)."""

PARALLEL_MIN_MULTIPLY_ADDS = 1_000_000
"""Run the directions of a layer on threads of their own from this much work on (the products'
multiply-adds of all directions, B·T·4H·(I + H)·D); below, one after another on the calling
thread: starting the parallel driver and holding BLAS to one thread meanwhile cost ≈ 40–50 µs
a call (measured on 2 cores of a Zen 3, docs/performance.md)."""

PARALLEL_DIRECTIONS_MIN_STEPS = 32
"""Run two directions side by side, a thread each, from this many steps on whatever the work
(below ``PARALLEL_MIN_MULTIPLY_ADDS``): each step of a small model costs little, but its steps
follow one another, and two directions on two threads halve the loop (Zen 4, two directions,
(B, T, H, H), µs, one after another → side by side: (1, 100, 16) 72–73 → 52–63, (1, 64, 16)
52–53 → 44–50, (1, 32, 32) 50–52 → 44–49; (1, 12, 32) 31–32 → 33–35 and (1, 4, 64) 32 → 33–36
below it, docs/performance.md)."""

PARTITION_MIN_MULTIPLY_ADDS = 1_000_000
"""Split the batch of a direction over threads from this much work on (its multiply-adds,
B·T·4H·(I + H)); below, one thread runs it, with BLAS's own threads for the projection. It was
6·10⁶ (Zen 3); on a Zen 4 the split paid from 10⁶ ((8, 64, 32, 32) 164–172 → 113 µs,
(6, 50, 48, 48) 175–179 → 124–128, (32, 1, 128, 128) 123–176 → 91–151), and cost 4–8 µs below
(``PARALLEL_MIN_MULTIPLY_ADDS``; docs/performance.md). Whatever the steps: the limit of 16
rows × steps a thread, set when each thread's input projection was a BLAS GEMM that packed all
of W_ih for a few rows (Zen 3), cost one-step calls up to 2× once a few rows' projection ran
in the dot tile (Zen 4: (8, 1, 512, 512) 388 → 211 µs split, (16, 1, 128, 128) 75 → 50,
(2, 4, 1024, 1024) 5.9 → 2.9 ms; two rows a thread at one step 0.94–1.00×)."""

PARTITION_MIN_BATCH = 4
"""Split the batch over the threads from this batch size on (unless ``plan_unit_split`` splits
the hidden units of 4–5 rows instead). Below, the hidden units are split where
``plan_unit_split`` takes them (the seed's cell; read backwards, rows of one length); else one
thread runs the rows (two or three rows in one register tile beat a row a thread, which reads
all of W_hh per row) and BLAS may use the other threads for the input projection."""

PARTITION_ALWAYS_ABOVE_HIDDEN = 512
"""Above this H, W_hh (16·H² bytes in float32) is beyond the caches and the batch is split over
the threads at any size: two rows on two threads, each a GEMV, beat one thread's tile."""


CACHE_FALLBACK_BYTES = {2: 1 << 20, 3: 32 << 20}
"""A core's L2 and the L3 the cores share, where the system does not say (``cache_bytes``):
1 MiB and 32 MiB, as on Zen 4 and 5."""


@functools.cache
def cache_bytes(level, base="/sys/devices/system/cpu/cpu0/cache"):
    """Bytes of the cache of ``level`` (2: a core's own; 3: shared by the cores), from ``base``,
    Linux's description of the first CPU's caches; ``CACHE_FALLBACK_BYTES`` where there is none."""
    try:
        for entry in sorted(os.listdir(base)):
            with open(os.path.join(base, entry, "level")) as entry_level:
                if entry_level.read().strip() != str(level):
                    continue
            with open(os.path.join(base, entry, "size")) as size:
                text = size.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return CACHE_FALLBACK_BYTES[level]


DIRECTIONS_IN_TURN_MAX_BATCH = 4
"""Run the two directions of up to this many rows in turn (``directions_in_turn``): with five,
the units split of each direction in turn ran 0.88–1.03× as fast as the directions side by side
(Zen 4, T = 64, ms side by side against in turn: H = 768 37.9–38.5 against 41.8–43.2, H = 896
51.9–56.1 against 56.5–57.4, H = 1024 87.6–94.4 against 91.3–92.3)."""


def directions_in_turn(w_hh, batch):
    """Whether a layer's two directions may run one after another instead of side by side, a
    thread each: for up to ``DIRECTIONS_IN_TURN_MAX_BATCH`` rows (``batch``), where both
    directions' W_hh (w_hh (D, 4H, H_out)) take more than half the shared cache
    (``cache_bytes(3)``). Side by side they push each other out of it; in turn, each direction's
    step runs on all the threads, each reading its share of W_hh: one row's GEMV, or the units
    split (``lstm_layer_forward`` keeps the directions side by side where it does not take them:
    rows split over the threads each read all of W_hh a step, and in turn there are twice as many
    steps). Zen 4 (32 MB L3, 2 threads; docs/performance.md), T = 64, alternating processes, ms,
    side by side → in turn: H = 1024 (W_hh 33.5 MB for both) B = 1 30–49 → 27–28, B = 2 57–67 →
    35–37, B = 4 72–81 → 59–60; H = 896 (25.7 MB) B = 1 28–33 → 18–21, B = 2 29–38 → 25; H = 768
    (18.9 MB) B = 1 13.6–15.8 → 14.5–15.6, B = 3 25.7–26.7 → 23.5–24.1; two rows split over the
    threads in turn (before the units split could take a direction) 21.0–21.9 → 25.7–28.6."""
    big = w_hh.shape[0] > 1 and w_hh.nbytes > cache_bytes(3) // 2
    return big and 1 <= batch <= DIRECTIONS_IN_TURN_MAX_BATCH


DIRECTIONS_IN_PLACE_MIN_BYTES = 16 << 20
"""Run a layer of two directions after the first on the layer below's output in place
(``directions_in_place``) where that saves at least this much memory (half of y). Below, it
costs time that memory this small is not worth: in halves of time a few milliseconds a layer,
while GNU OpenMP's worker still spins from the layer below and the second direction's Python
thread waits for a core ((1, 1000, 128, 128) two layers 12.3–14.9 → 18.0–19.3 ms, Zen 4, 2
threads); in turn 0–5 % ((8, 200, 64, 64), time-major (4, 1000, 128, 128)). Above, as fast,
within this machine's noise (docs/performance.md)."""


IN_TURN, IN_HALVES, RECOMPUTED = "in turn", "in halves", "in halves, recomputed"
"""How a layer of two directions runs on its input in place (``directions_in_place``; with
``low_memory``, ``RECOMPUTED``: ``lstm_directions_recomputed``)."""

LOW_MEMORY_SHARE = 0.18
"""With ``low_memory`` (``LSTM.__call__``), the most a layer of two directions after the first
holds beyond y, its workspaces included (``in_turn_group_bytes``, ``low_memory_budget``), as a
share of the model's x + y + weights: the issue's 1.2 ×, less a margin for the rest (states,
lengths, row orders)."""


LOW_MEMORY_GROUP_MIN_ROWS = 4
"""Fewest rows a group of a layer in turn (``in_turn_groups``) keeps under ``low_memory``; where
groups would be smaller, ``lstm_directions_recomputed`` is faster (Zen 4, (8, 4000, 256, 256)
two layers, alternating processes: groups of 3 rows 1705–1734 ms, recomputed 1390–1444)."""


def rows_workspace_bytes(batch, steps, inputs, hidden, width, itemsize):
    """Bytes ``lstm_rows_forward`` allocates for ``batch`` rows over ``steps`` (its chunk of the
    input projection, ``projection_steps``, and a step's arrays), ``inputs`` I, ``hidden`` H,
    H_out ``width``."""
    gates = 4 * hidden
    chunk = projection_steps.py_func(batch, steps) * batch
    return (chunk * (inputs + gates + 2) + batch * (gates + hidden + width)) * itemsize


def low_memory_budget(total_bytes, batch, steps, inputs, hidden, width, itemsize, at_once):
    """What a layer of two directions after the first may hold beyond y for its directions'
    outputs under ``low_memory``: ``LOW_MEMORY_SHARE`` of ``total_bytes`` (x + y + weights), less
    the workspaces of ``lstm_rows_forward`` for ``batch`` rows over ``steps`` (``inputs`` I,
    ``hidden`` H, H_out ``width``) ``at_once`` times (2 where each direction runs them all; 0
    for a plan that counts its own, ``recompute_plan``) and W_hh of both directions packed where
    ``plan_forward`` packs it."""
    workspace = rows_workspace_bytes(batch, steps, inputs, hidden, width, itemsize)
    packs = plan_forward(batch, inputs, hidden, steps)[0] == RECURRENT_PANELS
    panels = packs * 2 * 4 * hidden * width * itemsize
    return LOW_MEMORY_SHARE * total_bytes - at_once * workspace - panels


def directions_in_place(w_hh, lengths, time_steps, seed_cell, at_any_size=False):
    """How a layer of two directions after the first runs on the layer below's output in place,
    or None for side by side, where the half of y that saves (B rows of ``lengths`` (B,) int64
    over ``time_steps``, T) takes less than ``DIRECTIONS_IN_PLACE_MIN_BYTES`` (unless
    ``at_any_size``).

    ``IN_TURN`` (``LSTM._run_directions_in_turn``) where each direction on its own splits its
    rows over all the threads, or there is one thread, or the directions take turns anyway
    (``directions_in_turn``). Where a direction's units would split over the threads instead
    (1–5 rows, ``unit_split_parts``), in turn ran 1.1–1.2× slower than side by side (Zen 4,
    (1, 20000, 256, 256) and (4, 8000, 256, 256), two layers): there ``IN_HALVES``
    (``lstm_directions_in_halves``), side by side in two halves of time; so too where a
    direction would run on one thread of several (LSTMP, ONNX's options or traces, whose units do
    not split: ``seed_cell`` False, as ``unit_split_parts``'s). w_hh: (2, 4H, H_out)."""
    batch, width = lengths.size, w_hh.shape[2]
    saved = batch * time_steps * width * w_hh.itemsize
    if saved < DIRECTIONS_IN_PLACE_MIN_BYTES and not at_any_size:
        return None
    if directions_in_turn(w_hh, batch):
        return IN_TURN
    hidden, steps = w_hh.shape[1] // 4, int(lengths.max())
    _, partitions, parallel = plan_forward(batch, 2 * width, hidden, steps)
    split = unit_split_parts(lengths, steps, hidden, 1, False, seed_cell, w_hh.itemsize) > 1
    if not parallel or (partitions > 1 and not split):
        return IN_TURN
    return IN_HALVES if time_steps > 1 else None


IN_TURN_GROUPS = 4
"""Groups of rows a layer of two directions in turn runs one after another
(``in_turn_groups``), where it has rows enough: the forward direction's output of one group
waits in an array (of 1/8 of y's size with four) while the reverse one runs over that group's
input, instead of the whole batch's (half of y): (x + weights + peak) / (x + y + weights) with
I = H goes from at least 4/3 to 1.13 (Zen 4, (32, 1000, 256, 256) two layers: 1.37 → 1.12)."""

IN_TURN_GROUP_MIN_ROWS = 6
"""Rows a group of ``in_turn_groups`` at least: more than ``UNIT_SPLIT_MAX_BATCH``, so that each
group's rows still split over the threads; as fast as the batch at once down to 6 rows a group,
2 threads (Zen 4, two layers, one process alternating, best of 5, ms, the batch → groups):
(12, 3000, 256, 256) 1038 → 1040 in 2, (32, 1000, 256, 256) 952 → 1003 in 4, (16, 2048, 128,
128) 284 → 285 in 2, (64, 1000, 128, 128) 511 → 535 in 4, (24, 2000, 128, 128) with lengths
333 → 313 in 4; groups of 4 rows 8 % slower ((8, 4000, 256, 256) three layers, 1487 → 1610)."""


def in_turn_group_bytes(rows, steps, inputs, hidden, width, itemsize):
    """What a group of ``rows`` of ``LSTM._run_directions_in_turn`` holds beyond y (over
    ``steps``, ``inputs`` I, ``hidden`` H, H_out ``width``): its forward direction's output, and
    the workspaces of the direction running, ``lstm_rows_forward``'s on each slice of rows
    ``plan_forward`` makes (``rows_workspace_bytes``) and its W_hh packed where it packs."""
    product, partitions, _ = plan_forward(rows, inputs, hidden, steps)
    workspace = partitions * rows_workspace_bytes(
        -(-rows // partitions), steps, inputs, hidden, width, itemsize
    )
    panels = (product == RECURRENT_PANELS) * 4 * hidden * width * itemsize
    return rows * steps * width * itemsize + workspace + panels


def in_turn_groups(batch, traced, most_rows=None):
    """How many groups of rows (consecutive, of ``batch``) ``LSTM._run_directions_in_turn`` runs
    one after another: ``IN_TURN_GROUPS`` where each keeps ``IN_TURN_GROUP_MIN_ROWS``, fewer
    where it would not, more where a group would have more than ``most_rows`` (``low_memory``;
    None: no limit); one for ``traced`` calls (the traces' rows are y's, and the forward
    direction writes its group's at rows of its own array)."""
    if traced:
        return 1
    groups = max(1, min(IN_TURN_GROUPS, batch // IN_TURN_GROUP_MIN_ROWS))
    return groups if most_rows is None else max(groups, -(-batch // most_rows))


UNIT_SPLIT_MIN_UNITS = 48
"""Hidden units a thread at least, when they are split over the threads: with fewer, the
hand-over between the threads every step costs about what the split saves (Zen 4, 2 threads:
H = 64 in two parts ran 0.93–1.10× as fast as on one thread, H = 96 1.13–1.25×)."""

UNIT_SPLIT_MAX_BATCH = 5
"""Split the hidden units of up to this many rows (``plan_unit_split``); from 6 rows on, the rows
are split over the threads (6 rows split by units ran 0.89–1.01× as fast, Zen 4,
docs/performance.md)."""

UNIT_SPLIT_MIN_UNITS_AGAINST_ROWS = 128
"""Hidden units a part at least where the rows could be split over the threads instead (from
``PARTITION_MIN_BATCH`` rows on): that split has no hand-over between the threads, so the
units split must save more (Zen 4, 2 threads, 4–5 rows: 64–96 units a part 0.89–1.01× as fast
as the rows split, 128–512 units 1.11–1.19×)."""

UNIT_SPLIT_PACK_MIN_STEPS = 16
"""Steps from which the parts of more than one row pack their rows of W_hh for the register tile
(``recurrent_panels``), a copy of W_hh in all each call (≈ 0.13 ms at H = 512, 1.1–1.4 at
H = 1024, on one thread); with fewer, the dot tile reads the part's rows as they are
(``units_rows_product``), which wastes nothing on two or four rows (its 2 × 6 and 4 × 3 tiles)
and a quarter of a tile on three or five. So two and four rows pack from these steps, twice as
many above ``PARTITION_ALWAYS_ABOVE_HIDDEN`` (where W_hh with its copy outgrows L3), three from
these at any H and five from half as many. Zen 4, with the packing of 2026-12-01 (item 49),
packed against not, in one process: (2, 8, 256) 0.76×, (2, 12, 512) 0.85×, (4, 8, 512) 0.96×,
(2, 16, 256) 1.05×, (2, 16, 512) 1.06×, (4, 16, 256–512) 1.03–1.10×, (2, 16, 768) 0.90×,
(4, 16, 768) 0.95×, (2, 24, 1024) 1.01×, (4, 24, 1024) 1.04×, (2, 32, 1024) 1.03×; three rows
(3, 8, 256–512) 0.88–0.94×, (3, 16, 768–1024) 1.00–1.10×, (3, 24, 768) 1.10×; five rows (5, 4,
512) 0.98×, (5, 8, 256–1024) 1.05–1.10×, (5, 12, 384–768) 1.04–1.16×, (5, 16, 1024) 1.29×
(docs/performance.md)."""


UNIT_SPLIT_ONE_ROW_PACK_MIN_STEPS = 64
"""Steps from which the parts of one row pack their rows of W_hh too, read then in the register
tile's one-row form (one stream of panels) instead of ``units_product``'s 4-row dot tile on W_hh
as it is (four streams): a part's product 1.04–1.3× as fast (item 24), and since the packing
got 3–4.5× faster (item 49) and the tile 512-bit loads on cache lines (item 63) it repays its
copy. Zen 4, (1, T, H, H), packed against not, in one process, six alternating rounds, medians
of their bests: T = 128 at H = 128, 192, 256, 320 1.13×, 1.18×, 1.15×, 1.09×; T = 500–2000 at
H = 128–320 1.07–1.20×; T = 64 1.05–1.13×; T = 32 0.91–1.04×, T = 8–16 0.69–1.09×; in
processes alternating with the code before, T = 64–500, 1.03–1.31× (the hour decides how
much). Packed, one row also splits beyond the L2 (``plan_unit_split``; docs/performance.md,
items 65 and 66)."""


def unit_split_packs(batch, hidden, steps):
    """Whether ``lstm_unit_split_forward``'s parts pack their rows of W_hh: one row over
    ``UNIT_SPLIT_ONE_ROW_PACK_MIN_STEPS`` steps or more, more rows over enough steps
    (``UNIT_SPLIT_PACK_MIN_STEPS``). (Over any steps where a frozen model keeps them packed,
    ``panels_kept``.)"""
    if batch == 1:
        return steps >= UNIT_SPLIT_ONE_ROW_PACK_MIN_STEPS
    least = UNIT_SPLIT_PACK_MIN_STEPS
    if batch == 5:
        least //= 2
    elif batch != 3 and hidden > PARTITION_ALWAYS_ABOVE_HIDDEN:
        least *= 2
    return steps >= least


UNIT_SPLIT_MIN_MULTIPLY_ADDS = 400_000
"""Split the hidden units only from this much recurrent work on (B·T·4H² multiply-adds): starting
the threads and holding BLAS to one thread cost a few µs a call, which the faster steps repay
(Zen 4, split against not, in one process: (1, 2, 256) 1.35×, (1, 2, 224) 1.24×, (1, 1, 336)
1.14×, (2, 2, 160) 1.07× at 0.4–0.5·10⁶; (1, 1, 256) 0.99×, (1, 1, 192) 0.88×, (1, 1, 128)
0.68× below; 10⁶ until the guards cost less, item 41, and few steps of several rows split
unpacked, item 44; docs/performance.md)."""


RECURRENT_BLAS, RECURRENT_DOT_TILE, RECURRENT_PANELS = 0, 1, 2
"""How ``lstm_rows_forward`` computes the recurrent product: BLAS (``np.dot``), the dot-product
tile on W_hh as it is (``dot_tile_product``), or the register tile on packed W_hh
(``recurrent_panels``)."""

ONE_ROW_LOOP_MAX_WIDTH = 48
"""Where one row runs a step (``RECURRENT_BLAS``), its recurrent product is ``units_product``
instead of BLAS's GEMV up to this width of W_hh (H, or LSTMP's P), where calling BLAS costs more
than the product. Zen 4, one row, T = 200, I = H, alternating processes, µs a forward, BLAS →
loop: H = 24 116–146 → 96–110, H = 32 136–142 → 110–120, H = 48 209–225 → 178–206; from H = 64
on, as fast or slower (bidirectional, T = 20: H = 64 62–79 → 60–98, H = 80 78–131 → 85–109)."""

PANEL_MIN_ROW_STEPS = 128
"""``recurrent_panels`` from this many rows a thread × steps on: W_hh is packed for it once a
forward (a copy of W_hh into fresh memory: 0.15 ms at H = 256, ≈ 1 ms at H = 512 then), which
the tile's faster steps repay after ≈ 50–100 row-steps; below, ``dot_tile_product``, which needs
no packing (measured on a Zen 3, docs/performance.md). With packing 3–4.5× faster (item 49), 16
row-steps still ran up to 1.27× slower on a Zen 4."""

PANEL_NARROW_MAX_HIDDEN = 64
PANEL_NARROW_THREADED_MIN_ROW_STEPS = 32
"""Up to ``PANEL_NARROW_MAX_HIDDEN`` hidden units, in calls whose rows run on threads, the panels
from this many row-steps a thread on (``PANEL_NARROW_MIN_ROW_STEPS`` on the calling thread): W_hh
(≤ 64 KiB in float32) packs in a few µs, into memory the allocator has at hand, and 32
row-steps repay it. Zen 4, (B, T, H, H), best of 300, three alternating pairs, µs (from 128 →
from 32 row-steps): (2, 32, 64) 123–170 → 81–83, (4, 24, 64) 123–166 → 101–103, (3, 40, 48)
126–153 → 89–94, (4, 8, 64) 54–73 → 51–53; two layers (2, 32, 64) 267–272 → 186–188; float64
(2, 32, 64) 188–194 → 147–152. At H = 96–128, 32–64 row-steps ran level or up to 4 % slower, at
H = 192–384 up to 1.7× slower (docs/performance.md)."""

PANEL_NARROW_MIN_ROW_STEPS = 8
"""``PANEL_NARROW_THREADED_MIN_ROW_STEPS`` for calls on the calling thread: packing W_hh at H ≤ 64
takes 2–3 µs since item 49, which a few steps of the tile repay; where the rows run on threads,
the packing runs on one thread before they start and 16 row-steps a thread ran 0.90–0.93× as
fast. Zen 4, (B, T, H, H), 8 (or 16) against 32 row-steps, in one process: (2, 4, 64) 1.10×,
(3, 4, 64) 1.07×, (2, 6, 64) 1.20×, (2, 8, 64) 1.25×, (2, 8, 32) 1.17×, (2, 8, 16) 1.06×,
(6, 4, 48) 1.17×, (2, 12, 48) 1.31×, (4, 4, 64) and (8, 2, 64) 1.02×, (4, 2, 64) 0.96×
(docs/performance.md, item 54)."""


ONE_ROW_PANEL_MIN_STEPS = 32
"""One row reads W_hh packed, in the register tile's one-row form (``recurrent_panels``), from
this many steps on where its direction runs on the calling thread, twice as many where two
directions run side by side (``one_row_packs``), instead of ``plan_forward``'s product for one
row (BLAS's GEMV, or ``units_product`` up to ``ONE_ROW_LOOP_MAX_WIDTH``). Zen 4, (1, T, H, H),
the tile forced against not, in one process, alternating rounds, best of each: one direction,
H = 16–80 at T = 8 0.93–0.97× (packing costs more than the steps save), T = 16 0.96–1.02×,
T = 32 1.00–1.07×, T = 64 1.04–1.10×, T = 256 1.11–1.16×, T = 1000 1.14–1.22×; with peepholes
(no units split) H = 128 1.07–1.15× from T = 16, H = 256 1.00–1.07×, H = 384 (W_hh 2.4 MB,
beyond L2) 0.67–0.77×. Two directions side by side (a thread each, both packed first on the
calling thread): H = 32–192 1.10–1.39× from T = 64, H = 256 0.94–0.96× at T = 64–128
(docs/performance.md, item 57)."""


def one_row_packs(w_hh, steps, side_by_side):
    """Whether one row reads W_hh (D, 4H, H_out) packed over ``steps`` steps: its direction on the
    calling thread from ``ONE_ROW_PANEL_MIN_STEPS`` on, where a direction's W_hh fits a core's L2 or
    BLAS runs on one thread (``blas_on_one_thread``); two directions side by side (``side_by_side``)
    from twice as many, where both directions' W_hh fit it; over any steps where the panels are kept
    from call to call (``panels_kept``) and W_hh is wider than ``ONE_ROW_LOOP_MAX_WIDTH`` ((1, 1–4,
    8–32, 8–32) ran 0.87–0.92× as fast packed, ≈ 2 µs more a call, of 13–18). Beyond the L2 the
    one-row tile reads W_hh from L3 at ≈ 94 GB/s, BLAS's GEMV on one thread at ≈ 74 (Zen 4,
    H = 512–768): on one thread, (1, T, H, H), packed ran 1.01–1.51× as fast from T = 32 at
    H = 320–1536, W_hh beyond the L3 included (docs/performance.md, item 64). BLAS's GEMV on two
    threads stays ahead of the tile on one (0.69–0.80×), as do two directions side by side from L3
    (0.75–1.01×). Not under ``NUMBA_DISABLE_JIT=1`` (the tile is an LLVM intrinsic, with no Python
    form)."""
    if numba_config.DISABLE_JIT:
        return False
    # packed once, any steps repay it, but where a row's product is a loop (W_hh at most
    # ``ONE_ROW_LOOP_MAX_WIDTH`` wide) looking the panels up costs more than the tile saves
    kept = panels_kept() and w_hh.shape[2] > ONE_ROW_LOOP_MAX_WIDTH
    if side_by_side:
        return (kept or steps >= 2 * ONE_ROW_PANEL_MIN_STEPS) and w_hh.nbytes <= cache_bytes(2)
    if not kept and steps < ONE_ROW_PANEL_MIN_STEPS:
        return False
    return w_hh[0].nbytes <= cache_bytes(2) or blas_on_one_thread()


def blas_on_one_thread():
    """Whether the BLAS the kernels call (``_blas_threads``) runs on one thread: after
    ``set_num_threads(1)``, with ``OPENBLAS_NUM_THREADS=1``, on one core. False where no BLAS
    library is found (its threads unknown). ≈ 0.2 µs a library."""
    counts = [get() for get, _ in _blas_thread_functions()]
    return bool(counts) and max(counts) == 1


def plan_forward(batch, inputs, hidden, steps, directions=1):
    """``(product, partitions, parallel)`` for ``lstm_layer_forward``: how the recurrent product
    runs (one of the ``RECURRENT_*``; BLAS's GEMV for one row a thread), into how many slices
    each direction's batch rows are split, and whether the directions × slices run on threads
    of their own (``lstm_partitioned_forward``) or one after another on this one. Measured on 2
    cores of a Zen 3, docs/performance.md: the register tile beats BLAS from 2 rows a thread on,
    up to the 512 rows a thread measured, as BLAS repacks W_hh on every step's call; small
    calls run faster without threads (``PARALLEL_MIN_MULTIPLY_ADDS``, unless two directions have
    ``PARALLEL_DIRECTIONS_MIN_STEPS``; ``PARTITION_MIN_MULTIPLY_ADDS``). Under
    ``NUMBA_DISABLE_JIT=1`` (the kernels run as Python, for a debugger), never the register
    tile, an LLVM intrinsic with no Python form."""
    work = batch * steps * 4 * hidden * (inputs + hidden)
    parallel = work * directions >= PARALLEL_MIN_MULTIPLY_ADDS or (
        directions > 1 and steps >= PARALLEL_DIRECTIONS_MIN_STEPS
    )
    threads = 1  # asked only where it matters: ≈ 0.7 µs, 5 % of the smallest calls
    if parallel:
        threads = forward_threads()
        parallel = threads > 1
    partitions = max(1, min(threads // directions, batch))
    rows = -(-batch // partitions)
    split = (
        parallel
        and work >= PARTITION_MIN_MULTIPLY_ADDS
        and (batch >= PARTITION_MIN_BATCH or hidden > PARTITION_ALWAYS_ABOVE_HIDDEN)
    )
    if not split:
        partitions, rows = 1, batch
    if rows < 2:
        return RECURRENT_BLAS, partitions, parallel
    least = PANEL_MIN_ROW_STEPS
    if hidden <= PANEL_NARROW_MAX_HIDDEN:
        least = PANEL_NARROW_THREADED_MIN_ROW_STEPS if parallel else PANEL_NARROW_MIN_ROW_STEPS
    packing_pays = (rows * steps >= least or panels_kept()) and not numba_config.DISABLE_JIT
    return (RECURRENT_PANELS if packing_pays else RECURRENT_DOT_TILE), partitions, parallel


LENGTH_ORDER_MIN_MULTIPLY_ADDS = 2_500_000
"""Rows of one slice (``plan_forward``'s partitions = 1) run in length order (``length_order``)
where that saves this many multiply-adds (``order_saves``); below, as they come: putting rows
in order and back (h, c and x's rows in, y out) costs ≈ 15–25 µs of copies and Python a call
(Zen 4, docs/performance.md, item 73)."""


def order_saves(lengths, inputs, hidden, width, layers_directions):
    """The multiply-adds that length order saves rows of ``lengths`` (B,) int64 in one slice: as
    they come, each step runs the rows up to the last one still running; in order, only those
    running. ``inputs`` I, ``hidden`` H, ``width`` H_out, times ``layers_directions``."""
    as_they_come = int(np.maximum.accumulate(lengths[::-1]).sum())
    return (as_they_come - int(lengths.sum())) * 4 * hidden * (inputs + width) * layers_directions


def length_order(lengths, partitions):
    """A permutation of the batch rows that lets lengths save work: each of the ``partitions``
    slices of rows (``lstm_partitioned_forward``'s) holds rows of descending length, so that
    finished rows leave a shrinking prefix, and the slices get long and short rows alike (rank r
    of the lengths goes to slice r mod ``partitions``), so that the threads finish together; rows
    all of one length stay where they are (nothing to copy). NumPy, not compiled: a compiled
    version took 1 µs instead of 16, and 4.5–5.5 s more of a cold first call with lengths
    (docs/performance.md, item 72).

    Returns ``order`` (B,) int64: row ``order[k]`` of ``lengths`` (B,) int64 goes to position k.
    """
    batch = lengths.size
    if batch == 0 or lengths.min() == lengths.max():
        return np.arange(batch)
    ranked = np.argsort(-lengths, kind="stable")
    if partitions == 1:
        return ranked
    starts = np.arange(partitions + 1) * batch // partitions
    sizes = np.diff(starts)
    rank = np.arange(batch)
    part, within = rank % partitions, rank // partitions
    fits = within < sizes[part]
    position = np.empty(batch, np.int64)
    position[fits] = starts[part[fits]] + within[fits]
    # With B not a multiple of the slices, the shortest rows fill the slots left at slice ends.
    free = np.ones(batch, bool)
    free[position[fits]] = False
    position[~fits] = np.flatnonzero(free)
    order = np.empty(batch, np.int64)
    order[position] = ranked
    return order


@njit(**KERNEL_OPTIONS)
def pack_panels(w_hh):
    """W_hh (D, 4H, H) as the register tile reads it: (D, P, H, W) panels, panel p of direction d
    holding rows [W·p, W·(p + 1)) of w_hh[d] transposed, zeros past the last row; W =
    ``register_tile.panel_width``. Packed once a forward and layer, shared by the threads; on one
    thread (0.13 ms at H = 512, 1.1–1.4 at H = 1024): a parallel loop would halve that but add
    ≈ 3.5 s to the first compile."""
    directions, gate_rows, hidden = w_hh.shape
    count = panel_count(gate_rows, w_hh.itemsize)
    panels = empty_panels((directions, count, hidden, panel_width(w_hh.itemsize)), w_hh)
    rows = np.arange(gate_rows)
    for d in range(directions):
        pack_rows(w_hh[d], rows, panels[d])
    return panels


@njit(**KERNEL_OPTIONS)
def pack_rows(weights, rows, panels):
    """Rows ``rows`` (R,) int64 of weights (·, K) into panels (P, K, W), P·W ≥ R: panel p holds
    rows[W·p : W·(p + 1)] transposed, zeros past the last. A panel of W rows goes in blocks
    transposed in registers (``transpose_into_panel``), the last K mod L columns and a last panel
    of fewer rows one value at a time."""
    count, depth, width = panels.shape
    lanes = width // 2
    blocked = depth - depth % lanes
    for p in range(count):
        whole = (p + 1) * width <= rows.size
        if whole:
            for k0 in range(0, blocked, lanes):
                transpose_into_panel(weights, rows, p * width, k0, panels, p, 0)
                transpose_into_panel(weights, rows, p * width + lanes, k0, panels, p, lanes)
        rest = blocked if whole else 0  # the columns left to copy one value at a time
        for j in range(width):
            r = p * width + j
            if r < rows.size:
                row = weights[rows[r]]
                for k in range(rest, depth):
                    panels[p, k, j] = row[k]
            else:
                for k in range(depth):
                    panels[p, k, j] = 0


@njit(**KERNEL_OPTIONS)
def recurrent_panels(h, panels, out):
    """``out[:, :W·P] = h · w_hhᵀ``: h (B, H), panels (P, H, W) = one direction's
    ``pack_panels(w_hh)`` (P even), out (B, ≥ W·P); the columns past 4H get zeros.

    For small batches, where BLAS spends its time repacking W_hh on every call: W_hh is packed
    once a forward, and each pair of panels (in L1 or L2) serves every batch row in register
    tiles (``register_tile``) of up to 5 rows, the rows dealt evenly to the tiles (7 rows: 4 + 3,
    not 5 + 2, since a short tile has too few accumulators to keep the multiply-adds busy)."""
    batch = h.shape[0]
    count = panels.shape[0]
    tiles = -(-batch // MAX_TILE_ROWS)
    for p in range(0, count, 2):
        for t in range(tiles):
            b0 = t * batch // tiles
            rows = (t + 1) * batch // tiles - b0
            _tile_rows(h, panels, out, b0, rows, p)


@njit(**EQUATION_OPTIONS)
def _tile_rows(h, panels, out, b0, rows, p):
    """The register tile of ``rows`` (1 to 5) rows from b0 on, panels p and p + 1 (one tile, or
    one a panel where a tile reads one, ``register_tile.PANELS_PER_TILE``)."""
    if rows == 2:
        tile_2(h, panels, out, b0, p)
        return
    for q in range(p, p + 2, PANELS_PER_TILE):
        if rows == 5:
            tile_5(h, panels, out, b0, q)
        elif rows == 4:
            tile_4(h, panels, out, b0, q)
        elif rows == 3:
            tile_3(h, panels, out, b0, q)
        else:
            tile_1(h, panels, out, b0, q)


@njit(**REDUCTION_KERNEL_OPTIONS)
def dot_tile_product(a, weights, out):
    """``out = a · weightsᵀ``: a (M, K), weights (N, K), out (M, N), for a few rows of a.

    For products with too few rows to pay for packing the weights, where BLAS would spend its
    time packing them on every call: the recurrent product of sequences too short for
    ``recurrent_panels``, and the input and LSTMP projections of fewer than
    ``SMALL_PRODUCT_ROWS`` rows (one-step ``Stream`` calls). Each tile is 4 rows of a × 3 rows of
    weights, twelve dot products that vectorize over K (``reassoc``) and keep twelve vector
    registers accumulating, so one weight load feeds four multiply-adds. Each dot product ends in
    a horizontal sum, which is what the panels' outer-product tile avoids. The N mod 3 weight
    rows left get 4 × 1 tiles.
    """
    count, inner = a.shape
    columns = weights.shape[0]
    tiled = columns - columns % 3
    zero = a.dtype.type(0)
    for b0 in range(0, count, 4):
        rows = min(4, count - b0)
        # a partial tile repeats row b0; its extra sums are computed and dropped
        row0 = a[b0]
        row1 = a[b0 + 1] if rows > 1 else row0
        row2 = a[b0 + 2] if rows > 2 else row0
        row3 = a[b0 + 3] if rows > 3 else row0
        for n in range(0, tiled, 3):
            w0, w1, w2 = weights[n], weights[n + 1], weights[n + 2]
            a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = a30 = a31 = a32 = zero
            for k in range(inner):
                v0, v1, v2 = w0[k], w1[k], w2[k]
                x = row0[k]
                a00 += x * v0
                a01 += x * v1
                a02 += x * v2
                x = row1[k]
                a10 += x * v0
                a11 += x * v1
                a12 += x * v2
                x = row2[k]
                a20 += x * v0
                a21 += x * v1
                a22 += x * v2
                x = row3[k]
                a30 += x * v0
                a31 += x * v1
                a32 += x * v2
            _store_sums(out, b0, rows, n, a00, a10, a20, a30)
            _store_sums(out, b0, rows, n + 1, a01, a11, a21, a31)
            _store_sums(out, b0, rows, n + 2, a02, a12, a22, a32)
        for n in range(tiled, columns):
            w0 = weights[n]
            a0 = a1 = a2 = a3 = zero
            for k in range(inner):
                v0 = w0[k]
                a0 += row0[k] * v0
                a1 += row1[k] * v0
                a2 += row2[k] * v0
                a3 += row3[k] * v0
            _store_sums(out, b0, rows, n, a0, a1, a2, a3)


@njit(**EQUATION_OPTIONS)
def weights_product(a, weights, out):
    """``out = a · weightsᵀ`` (a (M, K), weights (N, K), out (M, N)) the faster way for M rows:
    BLAS for one row (a GEMV, which packs nothing) and from ``SMALL_PRODUCT_ROWS`` rows on; the
    dot tile (``dot_tile_product``) between, where BLAS's GEMM would spend its time packing the
    weights."""
    if 1 < a.shape[0] < SMALL_PRODUCT_ROWS:
        dot_tile_product(a, weights, out)
    else:
        np.dot(a, weights.T, out)


@njit(**EQUATION_OPTIONS)
def _store_sums(out, b0, rows, n, s0, s1, s2, s3):
    """Column n of a tile's rows: ``out[b0 + r, n] = s_r`` for the ``rows`` real rows of it."""
    out[b0, n] = s0
    if rows > 1:
        out[b0 + 1, n] = s1
    if rows > 2:
        out[b0 + 2, n] = s2
    if rows > 3:
        out[b0 + 3, n] = s3


@njit(**EQUATION_OPTIONS)
def _copy(source, target):
    """``target[:] = source`` for 1-D arrays of one size, element by element: Numba compiles a
    slice assignment with a formatted shape-mismatch error, ≈ 3 s of a cold first call."""
    for k in range(source.size):
        target[k] = source[k]


@njit(**EQUATION_OPTIONS)
def _output_row(y, row, t, batch_first, column, width):
    """The (width,) slice of y where batch row ``row`` writes step t, from ``column`` on."""
    return (y[row, t] if batch_first else y[t, row])[column : column + width]


@njit(**EQUATION_OPTIONS)
def _trace_rows(traces, direction, row, t, fallback):
    """Views of ``traces`` (D, 5, B, T, H) where ``direction``'s row ``row`` of step t records f,
    i, C̃, o and C; ``fallback`` five times when ``traces`` is None (pruned at compile time)."""
    if traces is None:
        return fallback, fallback, fallback, fallback, fallback
    trace = traces[direction]
    return trace[0, row, t], trace[1, row, t], trace[2, row, t], trace[3, row, t], trace[4, row, t]


@njit(**KERNEL_OPTIONS)
def lstm_step_pointwise(
    recurrent, projected, bias, cell, c, h_new, times, y, write_y, column, batch_first, row_offset,
    traces, direction,
):  # fmt: skip
    """Fused pointwise part of one step: all four gates, the cell update and the hidden state.

    recurrent: (B', 4H) h_prev·W_hhᵀ; projected: (B', 4H) x_t·W_ihᵀ; bias: (4H,) b_ih + b_hh, gate
    blocks in PyTorch order i, f, g, o. cell: None for the seed's cell (``equations.lstm_gates``),
    or ONNX's options (``equations.lstm_gates_onnx``) ``(kinds, params, peepholes, bound,
    input_forget)`` with a leading direction axis D, read at ``direction``: kinds (D, 3) int64,
    indices into ``equations.ACTIVATIONS`` for f, g, h; params (D, 3, 2) their alpha, beta;
    peepholes (D, 3, H) in ONNX order i, o, f; bound the clip (∞ when unused). c: (B', H), the
    previous cell states, overwritten with the new ones; h_new: (B', H), written with the new
    hidden states. times: (B',) the time index each row computes, -1 for a row past its length
    (skipped, its states kept). y: (B, T, ·) if ``batch_first`` else (T, B, ·); if ``write_y``,
    row ``row_offset + b`` of step ``times[b]`` written with h in columns [column, column + H),
    copied from h_new's row after the row's loop: a third store stream in the loop had LLVM check
    one more array for overlap before every row (5–13 % of the pass at H ≤ 64; item 38).
    traces: (D, 5, B, T, H), where row ``row_offset + b`` of step ``times[b]`` records f, i, C̃, o
    and C at ``direction``, or None. A kernel compiled for ``cell``/``traces`` None has no ONNX or
    trace code at all (Numba prunes ``is None`` on a None-typed argument). No intermediate arrays:
    each gate pre-activation is read once and lives in registers.
    """
    batch, hidden = c.shape
    # per-gate slices, indexed from 0, keep the inner loop simple enough for LLVM to vectorize
    i_gate = slice(0, hidden)
    f_gate = slice(hidden, 2 * hidden)
    g_gate = slice(2 * hidden, 3 * hidden)
    o_gate = slice(3 * hidden, 4 * hidden)
    b_i, b_f, b_g, b_o = bias[i_gate], bias[f_gate], bias[g_gate], bias[o_gate]
    if cell is not None:
        all_kinds, all_params, all_peepholes, bound, input_forget = cell
        kinds, params = all_kinds[direction], all_params[direction]
        peep_i, peep_o, peep_f = all_peepholes[direction]
    for b in range(batch):
        t = times[b]
        if t < 0:
            continue
        rec = recurrent[b]
        prj = projected[b]
        r_i, r_f, r_g, r_o = rec[i_gate], rec[f_gate], rec[g_gate], rec[o_gate]
        p_i, p_f, p_g, p_o = prj[i_gate], prj[f_gate], prj[g_gate], prj[o_gate]
        h_row = h_new[b]
        c_row = c[b]
        t_f, t_i, t_g, t_o, t_c = _trace_rows(traces, direction, row_offset + b, t, h_row)
        for j in range(hidden):
            z_i = r_i[j] + p_i[j] + b_i[j]
            z_f = r_f[j] + p_f[j] + b_f[j]
            z_g = r_g[j] + p_g[j] + b_g[j]
            z_o = r_o[j] + p_o[j] + b_o[j]
            if cell is None:
                f, i, g, o, c_new, h = equations.lstm_gates(z_i, z_f, z_g, z_o, c_row[j])
            else:
                f, i, g, o, c_new, h = equations.lstm_gates_onnx(
                    z_i, z_f, z_g, z_o, c_row[j], peep_i[j], peep_o[j], peep_f[j], bound,
                    input_forget, kinds[0], params[0, 0], params[0, 1], kinds[1], params[1, 0],
                    params[1, 1], kinds[2], params[2, 0], params[2, 1],
                )  # fmt: skip
            c_row[j] = c_new
            h_row[j] = h
            if traces is not None:
                t_f[j], t_i[j], t_g[j], t_o[j], t_c[j] = f, i, g, o, c_new
        if write_y:
            _copy(h_row, _output_row(y, row_offset + b, t, batch_first, column, hidden))


@njit(**KERNEL_OPTIONS)
def lstm_rows_forward(
    x, x_rows, w_ih, w_hh, w_hr, bias, cell, h, c, y, column, lengths, first_time, reverse,
    batch_first, product, panels, input_panels, row_start, row_stop, traces, direction,
    y_first_row, y_shift,
):  # fmt: skip
    """Serial worker: batch rows [row_start, row_stop) of one layer in one direction, all steps.

    x: (B', T, I) if ``batch_first`` else (T, B', I), batch row b read at x_rows[b] (B,) int64
    (the rows in ``length_order`` without a copy of x; else 0, 1, …); y: (B', T, D·H_out) or
    (T, B', D·H_out), batch row b written at row y_first_row + b (0 but for a group of rows,
    ``LSTM._run_directions_in_turn``), this direction's columns [column, column + H_out) (rows
    past a length are left alone), x's step t at y's step t - ``y_shift`` (0 but for an array of
    part of the sequence, ``lstm_directions_recomputed``; the traces' steps as y's).
    w_ih: (4H, I); w_hh: (4H, H_out), or None where ``panels`` hold it (the kernel compiled for
    None has no other product: ≈ 0.5 s less to compile); bias: (4H,) = b_ih + b_hh; w_hr:
    (H_out, H) the projection, or None for none (H_out = H; the kernel compiled for None has no
    projection: ≈ 1.5 s less to compile). cell: None for the seed's cell (the kernel compiled for
    None has no ONNX code, which halves its compile time), or ONNX's options (see
    ``lstm_step_pointwise``). h: (B, H_out), c: (B, H), the initial states on entry and the states
    after each row's last valid step on return. lengths: (B,) int64 valid steps per row, from
    time ``first_time`` of x and y on (0 for whole sequences; more for a part of them,
    ``lstm_directions_in_halves``); ``reverse`` reads each row from its last step down to its
    first. ``product``: how the recurrent product runs, one of the ``RECURRENT_*`` (with
    ``RECURRENT_BLAS``, a step of one running row and W_hh at most ``ONE_ROW_LOOP_MAX_WIDTH`` wide
    runs ``units_product``); panels: (D, P, H_out, W), every direction's W_hh packed for
    ``RECURRENT_PANELS`` (``pack_panels``), read at ``direction``; else None (a kernel compiled
    for None has no register tile: ≈ 1.2 s less to compile). Exactly one of w_hh and panels is
    None. input_panels: (D, P', I, W), every direction's W_ih packed (a frozen model's, kept,
    ``KeptPanels``) for the projections of fewer than ``SMALL_PRODUCT_ROWS`` rows
    (``input_projection``), or None. traces, direction: gate traces (see
    ``lstm_step_pointwise``; rows as y's), or None. Floats all float32 or all float64, all
    C-contiguous.

    The input projection runs as one GEMM per chunk of steps (``projection_steps``), so the
    workspace does not grow with T; it copies x at the chunk's times before the steps write y
    there, so x may be y (a layer run in place, ``LSTM._run_layers``). Each step is one
    recurrent product and one fused pointwise pass (plus one product with w_hr when projecting),
    over the rows up to the last one still running, and so is its share of the projection:
    ordering rows by descending length turns padding into saved work.
    """
    batch = row_stop - row_start
    inputs = x.shape[2]
    gate_rows, hidden = w_ih.shape[0], c.shape[1]
    projecting = w_hr is not None
    steps = 0
    for row in range(row_start, row_stop):
        steps = max(steps, lengths[row])
    chunk = projection_steps(batch, steps)
    x_chunk = np.empty((chunk * batch, inputs), dtype=h.dtype)
    projected = np.empty((chunk * batch, gate_rows), dtype=h.dtype)
    times = np.empty((chunk, batch), dtype=np.int64)
    # step s of a chunk: rows [starts[s], starts[s + 1]) of x_chunk and projected
    starts = np.empty(chunk + 1, dtype=np.int64)
    # the panels' zero padding makes the tile's product up to 2W - 1 columns wider than 4H
    width = gate_rows if panels is None else max(gate_rows, panels.shape[1] * panels.shape[3])
    recurrent = np.empty((batch, width), h.dtype)
    h_rows = h[row_start:row_stop]
    c_rows = c[row_start:row_stop]
    y_row = y_first_row + row_start  # y's row of the first of these rows
    h_unprojected = np.empty((batch, hidden if projecting else 0), dtype=h.dtype)
    h_projected = np.empty((batch, h.shape[1] if projecting else 0), dtype=h.dtype)
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        starts[0] = 0
        for s in range(n):
            step = t0 + s
            # Rows past the last one still running sit out the step (rows ordered by descending
            # length, as the model orders them, leave a shrinking prefix), in the projection too.
            active = 0
            for b in range(batch):
                length = lengths[row_start + b]
                t = first_time + (length - 1 - step if reverse else step) - y_shift
                times[s, b] = t if step < length else -1  # y's step
                if step < length:
                    active = b + 1
            for b in range(active):
                t, source = times[s, b] + y_shift, x_rows[row_start + b]
                if times[s, b] >= 0:
                    _copy(x[source, t] if batch_first else x[t, source], x_chunk[starts[s] + b])
                else:
                    x_chunk[starts[s] + b] = 0
            starts[s + 1] = starts[s] + active
        input_projection(x_chunk[: starts[n]], w_ih, input_panels, direction, projected)
        for s in range(n):
            active = starts[s + 1] - starts[s]
            h_act, rec, time_act = h_rows[:active], recurrent[:active], times[s, :active]
            if t0 + s == 0 and not np.any(h_act):  # no initial state: W_hh · 0 unread
                rec[:] = 0
            elif panels is not None:
                recurrent_panels(h_act, panels[direction], rec)
            elif w_hh is not None:  # None where the panels hold it: none of this compiled then
                if product == RECURRENT_DOT_TILE:
                    dot_tile_product(h_act, w_hh, rec)
                elif active == 1 and w_hh.shape[1] <= ONE_ROW_LOOP_MAX_WIDTH:
                    units_product(w_hh, h_act[0], rec[0], 0, hidden)
                else:
                    np.dot(h_act, w_hh.T, rec)
            h_new = h_unprojected[:active] if projecting else h_act
            lstm_step_pointwise(
                rec, projected[starts[s] : starts[s + 1]], bias, cell, c_rows[:active], h_new,
                time_act, y, not projecting, column, batch_first, y_row, traces, direction,
            )  # fmt: skip
            if w_hr is not None:  # a branch Numba prunes where w_hr is None
                project_hidden(
                    h_new, w_hr, h_projected[:active], h_act, time_act, y, column, batch_first,
                    y_row,
                )  # fmt: skip


@njit(**KERNEL_OPTIONS)
def input_projection(x_rows, w_ih, input_panels, direction, projected):
    """``projected[:M] = x_rows · w_ihᵀ`` (x_rows (M, I), w_ih (4H, I), projected (≥ M, 4H)):
    ``weights_product``, or for fewer than ``SMALL_PRODUCT_ROWS`` rows the register tile on
    ``input_panels[direction]``, W_ih packed (a frozen model's; None: not compiled), 1.3–2.4×
    as fast as the dot tile on W_ih as it is (H = 256–1024, 2–8 rows, one thread, Zen 4)."""
    rows = x_rows.shape[0]
    if input_panels is not None and rows < SMALL_PRODUCT_ROWS:
        panels = input_panels[direction]
        wide = np.empty((rows, panels.shape[0] * panels.shape[2]), dtype=projected.dtype)
        recurrent_panels(x_rows, panels, wide)  # the zero-padded columns past 4H dropped
        for r in range(rows):
            _copy(wide[r, : w_ih.shape[0]], projected[r])
    else:
        weights_product(x_rows, w_ih, projected[:rows])


@njit(**KERNEL_OPTIONS)
def project_hidden(
    h_unprojected, w_hr, projected, h, times, y, column, batch_first, row_offset
):  # fmt: skip
    """LSTMP's projection h = h_unprojected · W_hrᵀ for the rows that computed this step.

    h_unprojected: (B', H); w_hr: (P, H); projected: (B', P) workspace; h: (B', P), rows with
    ``times[b] >= 0`` overwritten; y: (B, T, ·) or (T, B, ·), those rows' step ``times[b]``
    written in columns [column, column + P).
    """
    weights_product(h_unprojected, w_hr, projected)
    size = w_hr.shape[0]
    for b in range(h.shape[0]):
        t = times[b]
        if t >= 0:
            _copy(projected[b], h[b])
            _copy(projected[b], _output_row(y, row_offset + b, t, batch_first, column, size))


def direction_of(stack, d):
    """stack[d], direction d's array of a stack of every direction's, or None for None (LSTMP's
    w_hr where there is no projection; W_hh where the packed panels hold it)."""
    return None if stack is None else stack[d]


@overload(direction_of)
def _direction_of_compiled(stack, d):
    """``direction_of`` in compiled code, resolved by type: a branch on None would not be
    pruned where stack is an array (Numba prunes ``is None`` only where the argument is None),
    and would make the result Optional, a worker specialization of its own."""
    if isinstance(stack, types.NoneType):
        return lambda stack, d: None
    return lambda stack, d: stack[d]


@njit(parallel=True, **KERNEL_OPTIONS)
def lstm_partitioned_forward(
    x, x_rows, w_ih, w_hh, w_hr, bias, cell, h, c, y, column, lengths, backward, batch_first,
    product, panels, input_panels, partitions, traces, y_first_row,
):  # fmt: skip
    """Parallel driver: directions × ``partitions`` slices of batch rows, one thread each.

    Batch rows and directions are independent through the whole sequence, so the threads never
    wait for each other. Weights, bias, states, the cell's arrays (when not None) and the traces
    (D, 5, B, T, H) (when not None) carry a leading direction axis D (forward, then reverse);
    direction d writes y's columns from ``column`` + d·H_out on; ``backward``: the only direction
    (D = 1) reads backwards (ONNX's direction="reverse"); other arguments as
    ``lstm_rows_forward``. BLAS must be limited to one thread meanwhile.
    """
    directions, batch, width = h.shape
    # int64s, not the literal 0: the worker called from the calling thread gets int64s, and a
    # Literal[int](0) would compile it a second time (2–5 s) in a process that runs both
    first_time = y_shift = np.int64(0)
    for item in prange(directions * partitions):
        d = item // partitions
        part = item % partitions
        lstm_rows_forward(
            x, x_rows, w_ih[d], direction_of(w_hh, d), direction_of(w_hr, d), bias[d], cell,
            h[d], c[d], y, column + d * width, lengths, first_time, d == 1 or backward, batch_first,
            product, panels, input_panels, part * batch // partitions,
            (part + 1) * batch // partitions, traces, d, y_first_row, y_shift,
        )  # fmt: skip


COUNTER_STRIDE = 16
"""int64s between two of ``lstm_unit_split_forward``'s counters: 128 bytes, so that no two share a
cache line (or the pair of lines the prefetcher fetches together)."""


def plan_unit_split(batch, hidden, steps, directions, plain, itemsize):
    """Into how many parts ``lstm_layer_forward`` splits the hidden units of a few sequences, each
    part on a thread of its own (``lstm_unit_split_forward``); 1: not split. Only in one direction
    (more have threads of their own, ``plan_forward``), up to ``UNIT_SPLIT_MAX_BATCH`` rows, for the
    seed's cell without LSTMP's projection or traces and, read backwards, rows of one length
    (``plain``), with enough work and steps (``UNIT_SPLIT_MIN_*``), and for one row only where a
    part's share of W_hh (4H·H·``itemsize`` bytes over the parts) fits a core's L2
    (``cache_bytes(2)``) or the parts pack it (``unit_split_packs``). Measured on a Zen 4 (1 MB L2,
    2 threads, docs/performance.md): one row ran (1, 128, 320, 320) 1.54× faster split, a part's
    share 0.8 MB, but (1, 128, 384, 384) 0.85× as fast, 1.2 MB, where the alternative, BLAS's GEMV,
    runs on both threads too, unless packed: then 1.07–1.15× as fast at H = 384–1024 (from L3) and
    1.2–1.7× at H = 1536–2048 (from memory; item 66), over those steps whether packed each call or
    kept packed (a frozen model's, ``panels_kept``: (1, 1–8, 512, 512) split ran 0.82–0.95× as
    fast); two or three rows, whose alternative is the register tile on one thread, ran 1.1–1.45×
    faster split at H = 128–1024; four or five, whose alternative is the rows split, 1.11–1.19× at
    H = 256–1024 but not below (``UNIT_SPLIT_MIN_UNITS_AGAINST_ROWS``). Never in a process forked
    after GNU OpenMP started, nor under ``NUMBA_DISABLE_JIT=1`` (its atomics are LLVM instructions
    with no Python form)."""
    if not 1 <= batch <= UNIT_SPLIT_MAX_BATCH or directions != 1 or not plain:
        return 1
    if numba_config.DISABLE_JIT:
        return 1
    if batch * steps * 4 * hidden * hidden < UNIT_SPLIT_MIN_MULTIPLY_ADDS:
        return 1
    parts = min(forward_threads(), hidden // UNIT_SPLIT_MIN_UNITS)
    if parts < 2:
        return 1
    beyond_l2 = 4 * hidden * hidden * itemsize > parts * cache_bytes(2)
    if batch == 1 and beyond_l2 and not unit_split_packs(batch, hidden, steps):
        return 1
    if batch >= PARTITION_MIN_BATCH and hidden // parts < UNIT_SPLIT_MIN_UNITS_AGAINST_ROWS:
        return 1
    return parts


def unit_split_parts(lengths, steps, hidden, directions, backward, seed_cell, itemsize):
    """``plan_unit_split`` for a layer of rows of ``lengths`` (B,), the longest ``steps``, read
    from x in order, of the seed's cell without LSTMP's projection or traces (``seed_cell``).
    Read backwards, the rows must be of one length: rows of other lengths sit steps out at the
    end, which the split's reversed read would not have."""
    batch = lengths.size
    plain = seed_cell and 0 < batch <= UNIT_SPLIT_MAX_BATCH and directions == 1
    plain = plain and (not backward or int(lengths.min()) == steps)
    return plan_unit_split(batch, hidden, steps, directions, plain, itemsize)


def plans_settled(batch, steps, hidden, width, itemsize):
    """Whether ``batch`` rows over ``steps`` steps, H = ``hidden``, H_out = ``width``, floats of
    ``itemsize`` bytes, are past every threshold in steps of the plans above, so that more steps
    of as many rows take the kernels these take (``LSTM.warm_up``): the work (the least of the
    plans' counts, B·T·4H²), the row-steps of the panels (from one row a thread), the units
    split's packing, two directions' threads, and the memory of the directions in place."""
    least_work = batch * steps * 4 * hidden * hidden
    work = (PARALLEL_MIN_MULTIPLY_ADDS, PARTITION_MIN_MULTIPLY_ADDS, UNIT_SPLIT_MIN_MULTIPLY_ADDS)
    least_steps = (
        PANEL_MIN_ROW_STEPS, PANEL_NARROW_THREADED_MIN_ROW_STEPS, PANEL_NARROW_MIN_ROW_STEPS,
        2 * UNIT_SPLIT_PACK_MIN_STEPS, UNIT_SPLIT_ONE_ROW_PACK_MIN_STEPS,
        PARALLEL_DIRECTIONS_MIN_STEPS, 2 * ONE_ROW_PANEL_MIN_STEPS,
    )  # fmt: skip
    return (
        least_work >= max(work)
        and steps >= max(least_steps)
        and batch * steps * width * itemsize >= DIRECTIONS_IN_PLACE_MIN_BYTES
    )


@njit(**REDUCTION_KERNEL_OPTIONS)
def units_product(weights, vector, out, low, high):
    """``out[:4U] = weights[rows] · vector`` for the rows of units [low, high) of each gate block
    of weights (4H, K), gate after gate (U = high − low): vector (K,), out (≥ 4U,).

    One sequence's share of the recurrent product in ``lstm_units_round``: four calls of BLAS's
    GEMV (one a gate block) took 1.77 µs at H = 128 against 1.24 for this loop, a tile of four
    dot products that vectorize over K and share each load of the vector. Also one row's whole
    product in ``lstm_rows_forward`` where W_hh is narrow (``ONE_ROW_LOOP_MAX_WIDTH``).
    """
    hidden = weights.shape[0] // 4
    units = high - low
    tiled = units - units % 4
    zero = vector.dtype.type(0)
    for g in range(4):
        rows = weights[g * hidden + low : g * hidden + high]
        sums = out[g * units : (g + 1) * units]
        for j in range(0, tiled, 4):
            w0, w1, w2, w3 = rows[j], rows[j + 1], rows[j + 2], rows[j + 3]
            a0 = a1 = a2 = a3 = zero
            for k in range(vector.size):
                v = vector[k]
                a0 += w0[k] * v
                a1 += w1[k] * v
                a2 += w2[k] * v
                a3 += w3[k] * v
            sums[j], sums[j + 1], sums[j + 2], sums[j + 3] = a0, a1, a2, a3
        for j in range(tiled, units):
            a0 = zero
            for k in range(vector.size):
                a0 += rows[j, k] * vector[k]
            sums[j] = a0


@njit(**EQUATION_OPTIONS)
def few_rows_product(a, weights, out):
    """``weights_product`` (out = a · weightsᵀ) with one or two rows past the last four of the dot
    tile in 2 × 6 tiles (``_two_row_tiles``), where the 4 × 3 tile would compute four and drop
    the rest: the unpacked units split's products (``units_rows_product``, its parts'
    projections), whose two or five rows over few steps are most of their work. Kept out of the
    other kernels, which it would cost ≈ 1.2 s more to compile (docs/performance.md, item 46)."""
    count = a.shape[0]
    if not 1 < count < SMALL_PRODUCT_ROWS:
        np.dot(a, weights.T, out)
        return
    left = count % 4
    full = count - left if left < 3 else count
    if full > 0:
        dot_tile_product(a[:full], weights, out[:full])
    if full < count:
        _two_row_tiles(a, weights, out, full, left)


@njit(**REDUCTION_KERNEL_OPTIONS)
def _two_row_tiles(a, weights, out, b0, rows):
    """``dot_tile_product`` for rows b0 and b0 + 1 of a (just b0 where ``rows`` is 1): 2 × 6
    tiles, twelve dot products as the 4 × 3 tile has; a lone row is computed twice and stored
    once. Two rows ran 1.4–1.5× faster than in the 4 × 3 tile from L2 or L3 (K = 256–512),
    level from memory (Zen 4)."""
    inner = a.shape[1]
    columns = weights.shape[0]
    tiled = columns - columns % 6
    zero = a.dtype.type(0)
    row0 = a[b0]
    row1 = a[b0 + 1] if rows > 1 else row0
    for n in range(0, tiled, 6):
        w0, w1, w2 = weights[n], weights[n + 1], weights[n + 2]
        w3, w4, w5 = weights[n + 3], weights[n + 4], weights[n + 5]
        a00 = a01 = a02 = a03 = a04 = a05 = a10 = a11 = a12 = a13 = a14 = a15 = zero
        for k in range(inner):
            x0, x1 = row0[k], row1[k]
            v = w0[k]
            a00 += x0 * v
            a10 += x1 * v
            v = w1[k]
            a01 += x0 * v
            a11 += x1 * v
            v = w2[k]
            a02 += x0 * v
            a12 += x1 * v
            v = w3[k]
            a03 += x0 * v
            a13 += x1 * v
            v = w4[k]
            a04 += x0 * v
            a14 += x1 * v
            v = w5[k]
            a05 += x0 * v
            a15 += x1 * v
        _store_sums(out, b0, rows, n, a00, a10, zero, zero)
        _store_sums(out, b0, rows, n + 1, a01, a11, zero, zero)
        _store_sums(out, b0, rows, n + 2, a02, a12, zero, zero)
        _store_sums(out, b0, rows, n + 3, a03, a13, zero, zero)
        _store_sums(out, b0, rows, n + 4, a04, a14, zero, zero)
        _store_sums(out, b0, rows, n + 5, a05, a15, zero, zero)
    for n in range(tiled, columns):
        w0 = weights[n]
        a0 = a1 = zero
        for k in range(inner):
            a0 += row0[k] * w0[k]
            a1 += row1[k] * w0[k]
        _store_sums(out, b0, rows, n, a0, a1, zero, zero)


@njit(**EQUATION_OPTIONS)
def units_rows_product(weights, rows, out, low, high, gate):
    """``units_product`` for several rows, (B, K) → out (B, ≥ 4U): each gate block's rows of units
    [low, high) in the dot tile (``few_rows_product``), which reads them once for up to four
    rows, into gate (B, U), then out's columns. The parts' product where too few steps would
    repay packing their rows (``unit_split_packs``)."""
    hidden = weights.shape[0] // 4
    units = high - low
    for g in range(4):
        few_rows_product(rows, weights[g * hidden + low : g * hidden + high], gate)
        for b in range(rows.shape[0]):
            _copy(gate[b], out[b, g * units : (g + 1) * units])


@njit(**KERNEL_OPTIONS)
def lstm_units_round(
    part, round_, x, w_ih, w_hh, bias, panels, input_panels, panels_packed, gate_sums, h_buffer, c,
    y, column, lengths, steps, reverse, batch_first, bounds, projected, bias_parts, c_parts,
    recurrent, step_projected, h_part, times,
):  # fmt: skip
    """Round ``round_`` of hidden units [bounds[part], bounds[part + 1]) of every row. Round 0
    gathers their units of the bias and the cell state and packs their rows of W_hh (where
    ``unit_split_packs``) and W_ih (``input_panels``), unless ``panels_packed`` (an earlier call's,
    kept); round s + 1 runs step s: their rows of the recurrent product and the fused pointwise
    pass, and at the last step writes their cell states back to c. A round before the first step of
    a chunk of steps (``projection_steps``) ends with their input projection for the chunk (a gate
    block at a time, on the chunk's rows of x, several rows' steps read into one array: BLAS, or
    ``few_rows_product`` for several rows over too few steps to pack, or the register tile on the
    part's rows of W_ih where a frozen model keeps them packed, ``input_panels``, for fewer than
    ``SMALL_PRODUCT_ROWS`` rows), so that x is read at a chunk's times before any part writes y
    there: a stack of layers runs each layer on y in place (``LSTM._run_layers``). The recurrent
    product is the register tile (``recurrent_panels``) on the part's packed rows of W_hh, or over
    too few steps to repay packing them (``unit_split_packs``) the dot tile on them as they are:
    ``units_product`` for one row, ``units_rows_product`` for more.

    Arguments as ``lstm_unit_split_forward``'s; recurrent (B, ≥ 4U) and step_projected (B, 4W),
    h_part (B·W,) and times (B,) are the calling thread's workspace, U = the part's units, W = the
    widest part's.
    """
    batch, hidden = c.shape
    low, high = bounds[part], bounds[part + 1]
    units = high - low
    widest = bias_parts.shape[1] // 4
    chunk = projected.shape[2] // (batch * widest)  # steps a chunk
    part_bias = bias_parts[part, : 4 * units]
    part_c = c_parts[part, : batch * units].reshape((batch, units))
    # projected[part, g] holds gate g of a chunk of ``count`` steps as (B, count, U) if
    # batch_first, else (count, B, U): x's own order
    step = round_ - 1
    if step < 0:
        unit_rows = np.empty(4 * units, dtype=np.int64)  # the part's rows of the gate blocks
        for g in range(4):
            for u in range(units):
                unit_rows[g * units + u] = g * hidden + low + u
                part_bias[g * units + u] = bias[g * hidden + low + u]
        for b in range(batch):
            _copy(c[b, low:high], part_c[b])
        if panels is not None and not panels_packed:
            pack_rows(w_hh, unit_rows, panels[part])
        if input_panels is not None and not panels_packed:
            pack_rows(w_ih, unit_rows, input_panels[part])
    else:
        first = step - step % chunk  # the chunk's first step
        count = min(chunk, steps - first)
        # the chunk's steps read x at times [start, start + count), backwards when reversed
        start = steps - first - count if reverse else first
        t = steps - 1 - step if reverse else step
        h_now = h_buffer[step % 2]
        active = 0  # rows up to the last one still running (rows in descending length: all)
        for b in range(batch):
            if step < lengths[b]:
                active = b + 1
        # Numba takes a branch on an argument that is None at compile time (not on one that is
        # an array): one row unpacked compiles units_product alone, more rows theirs beside it
        if step == 0 and not np.any(h_now[:active]):  # no initial state: W_hh · 0 unread
            recurrent[:active] = 0
        elif panels is not None:
            recurrent_panels(h_now[:active], panels[part], recurrent[:active])
        elif gate_sums is not None:  # several rows over few steps, their rows of W_hh as they are
            gate = gate_sums[part, : active * units].reshape((active, units))
            units_rows_product(w_hh, h_now[:active], recurrent[:active], low, high, gate)
        else:  # one row over few steps
            units_product(w_hh, h_now[0], recurrent[0], low, high)
        row_stride, batch_stride = (units, count * units) if batch_first else (batch * units, units)
        offset = (t - start) * row_stride
        for b in range(batch):
            for g in range(4):
                source = projected[part, g, offset + b * batch_stride :]
                _copy(source[:units], step_projected[b, g * units : (g + 1) * units])
            times[b] = t if step < lengths[b] else -1  # a row past its length sits the step out
        h_new = h_part[: batch * units].reshape((batch, units))
        # non-literal constants: Literal arguments would compile the pointwise kernel again
        write_y, row_offset, direction = np.bool_(True), np.int64(0), np.int64(0)
        lstm_step_pointwise(
            recurrent, step_projected, part_bias, None, part_c, h_new, times, y, write_y,
            column + low, batch_first, row_offset, None, direction,
        )  # fmt: skip
        h_next = h_buffer[(step + 1) % 2]
        for b in range(batch):
            _copy(h_new[b] if times[b] >= 0 else h_now[b, low:high], h_next[b, low:high])
            if step == steps - 1:
                _copy(part_c[b], c[b, low:high])
    following = step + 1  # the next round's step: the first of a chunk to project?
    if following % chunk == 0 and following < steps:
        count = min(chunk, steps - following)
        start = steps - following - count if reverse else following
        if batch_first and batch > 1:  # the rows' steps side by side: one product a gate
            x_chunk = np.empty((batch * count, x.shape[2]), dtype=x.dtype)
            for b in range(batch):
                for s in range(count):
                    _copy(x[b, start + s], x_chunk[b * count + s])
        elif batch_first:  # one row: its steps up to its length
            x_chunk = x[0, start : start + min(count, max(lengths[0] - start, 0))]
        else:
            x_chunk = x.reshape((x.shape[0] * batch, -1))[start * batch : (start + count) * batch]
        rows = x_chunk.shape[0]
        if input_panels is not None and 0 < rows < SMALL_PRODUCT_ROWS:  # W_ih packed, kept
            wide = np.empty((rows, input_panels.shape[1] * input_panels.shape[3]), dtype=x.dtype)
            recurrent_panels(x_chunk, input_panels[part], wide)  # the part's gate rows
            for g in range(4):
                out = projected[part, g, : rows * units].reshape((rows, units))
                for r in range(rows):
                    _copy(wide[r, g * units : (g + 1) * units], out[r])
            rows = 0  # projected
        for g in range(4 if rows > 0 else 0):  # no rows: a row past its length
            gate_rows = w_ih[g * hidden + low : g * hidden + high]
            out = projected[part, g, : rows * units].reshape((rows, units))
            if gate_sums is None:
                np.dot(x_chunk, gate_rows.T, out)
            else:  # few steps of a few rows: the dot tile, where BLAS would pack gate_rows
                few_rows_product(x_chunk, gate_rows, out)


@njit(**KERNEL_OPTIONS)
def lstm_unit_parts_worker(
    first, x, w_ih, w_hh, bias, panels, input_panels, panels_packed, gate_sums, h_buffer, c, y,
    column, lengths, steps, reverse, batch_first, bounds, projected, bias_parts, c_parts, counters,
):  # fmt: skip
    """Serial worker of one thread of ``lstm_unit_split_forward``: every round, its own part
    (``first``) and whichever others no thread has claimed yet, once all parts of the round
    before are done (``lstm_units_round``: round 0 prepares a part, round s + 1 runs its step s).
    Claiming (a compare-and-swap of the part's round counter) instead of owning parts is what
    keeps the driver from waiting forever where the threading layer runs the workers one after
    another (TBB may): the first worker then runs every part of every round.
    """
    parts = bounds.size - 1
    batch = c.shape[0]
    widest = bias_parts.shape[1] // 4
    columns = 4 * widest
    if panels is not None:
        columns = max(columns, panels.shape[1] * panels.shape[3])  # the panels' zero padding
    recurrent = np.empty((batch, columns), dtype=c.dtype)
    step_projected = np.empty((batch, 4 * widest), dtype=c.dtype)
    h_part = np.empty(batch * widest, dtype=c.dtype)
    times = np.empty(batch, dtype=np.int64)
    done = parts * COUNTER_STRIDE
    for round_ in range(steps + 1):
        while atomics.load(counters, done) < parts * round_:
            pass  # spin: a step takes a few µs, less than a sleeping thread takes to wake
        for k in range(parts):
            part = (first + k) % parts
            if atomics.claim(counters, part * COUNTER_STRIDE, round_):
                lstm_units_round(
                    part, round_, x, w_ih, w_hh, bias, panels, input_panels, panels_packed,
                    gate_sums, h_buffer, c, y, column, lengths, steps, reverse, batch_first, bounds,
                    projected, bias_parts, c_parts, recurrent, step_projected, h_part, times,
                )  # fmt: skip
                atomics.add(counters, done, 1)


@njit(parallel=True, **KERNEL_OPTIONS)
def lstm_unit_split_forward(
    x, w_ih, w_hh, bias, panels, input_panels, panels_packed, gate_sums, h_buffer, c, y, column,
    lengths, steps, reverse, batch_first, bounds, projected, bias_parts, c_parts, counters,
):  # fmt: skip
    """Parallel driver for a few sequences: their hidden units split into parts,
    one thread each, which hand over every step: each reads its part's rows of W_ih and W_hh
    only (from its own core's L2 where they fit, ``plan_unit_split``), and waits for all parts'
    h of the step before.

    x: (B, T, I) if ``batch_first`` else (T, B, I); w_ih (4H, I), w_hh (4H, H), bias (4H,) b_ih +
    b_hh, gate blocks i, f, g, o; panels (P, N, H, W') the workspace where each part's rows of W_hh
    are packed for the register tile (``pack_rows``), or None where too few steps repay packing
    (``unit_split_packs``); input_panels: the same of W_ih (a frozen model's, for projections of
    fewer than ``SMALL_PRODUCT_ROWS`` rows), or None; panels_packed: whether they hold them already
    (a frozen model's, kept from an earlier call, ``KeptPanels``); gate_sums (P, B·W), there for
    several rows over too few steps to repay packing, each part's gate block of the dot tile
    (``units_rows_product``, where panels is None) and the input projection on the dot tile
    (``few_rows_product``), else None; h_buffer (2, B, H): h of even steps (row 0: the initial
    state) and of odd ones; c (B, H): the initial cell state, overwritten with the final one; y: (B,
    T, ·) or (T, B, ·), columns [column, column + H) of each row's first lengths[b] steps written
    (from the last one down when ``reverse``, which needs rows of one length); lengths (B,) int64,
    steps = their maximum; bounds (P + 1,) int64: part p's units are [bounds[p], bounds[p + 1]);
    workspace: projected (P, 4, chunk·B·W), bias_parts (P, 4W), c_parts (P, B·W), W = the widest
    part's units; counters ((P + 1)·``COUNTER_STRIDE``,) int64 zeros: each part's next unclaimed
    round (``lstm_unit_parts_worker``), then the count of parts done. After it, h_buffer[steps % 2]
    holds the final h. BLAS must be limited to one thread meanwhile. x may be y (a layer run in
    place, ``LSTM._run_layers``).
    """
    for first in prange(bounds.size - 1):
        # int64 as the parfor passes type it at first: the gufunc's own index is uint64, and
        # Numba would compile the worker a second time for it (1.4 s of a cold first call)
        lstm_unit_parts_worker(
            np.int64(first), x, w_ih, w_hh, bias, panels, input_panels, panels_packed, gate_sums,
            h_buffer, c, y, column, lengths, steps, reverse, batch_first, bounds, projected,
            bias_parts, c_parts, counters,
        )  # fmt: skip


class DryRun(NamedTuple):
    """What a dry run (``dry_run``) notes: ``signatures``, a set of ``(kernel, argument types)``,
    the types as Numba's dispatcher reads them (``typeof_pyval``), one for each driver call, so
    that ``kernel.compile(types)`` compiles, or loads from the cache, what the call would have;
    ``panels``, W_hh's panels (``pack_panels``, an argument of the drivers) by the address and
    shape of W_hh, packed once for the dry runs that share the dict."""

    signatures: set
    panels: dict


_DRY_RUN = contextvars.ContextVar("lstm_numba_dry_run", default=None)
"""The ``DryRun`` of the dry run (``dry_run``) a forward runs in, or None."""


@contextlib.contextmanager
def dry_run(panels=None):
    """A context in which this thread's forwards, and the threads they start, plan their calls as
    ever but run no driver: each call goes into the ``DryRun`` it yields (``LSTM.warm_up``), whose
    ``panels`` is ``panels`` (a dict shared by dry runs of one model's weights) or a new dict.
    Other threads' forwards meanwhile run as ever. Not under ``NUMBA_DISABLE_JIT=1``, where the
    kernels are Python functions, with no types to note."""
    run = DryRun(set(), {} if panels is None else panels)
    token = _DRY_RUN.set(run)
    try:
        yield run
    finally:
        _DRY_RUN.reset(token)


_KEPT_PANELS = contextvars.ContextVar("lstm_numba_kept_panels", default=None)
"""A frozen model's dict of its weights' panels, packed once (``KeptPanels``), or None: each
entry ``(weights, panels)``, the weights kept alive with their panels so that no other array
takes their identity or address while the entry lasts."""


class KeptPanels:
    """A context in which this thread's forwards, and the threads they start, run on read-only
    weights (a frozen model's, ``LSTM.freeze``): each W_hh, and W_ih where few rows are projected,
    is packed once into the dict ``panels`` and read from there on later calls, and the plans read
    the weights packed wherever that is the faster (``panels_kept``). (A class: 0.5 µs a call,
    against 1.5 for ``contextlib.contextmanager``'s.)"""

    __slots__ = ("panels", "token")

    def __init__(self, panels):
        self.panels = panels

    def __enter__(self):
        self.token = _KEPT_PANELS.set(self.panels)

    def __exit__(self, *exception):
        _KEPT_PANELS.reset(self.token)


def panels_kept():
    """Whether this thread's forward keeps the weights' panels from call to call
    (``KeptPanels``)."""
    return _KEPT_PANELS.get() is not None


class Recording:
    """The kernel calls of a forward, noted by ``_run`` (``recording``): ``calls``, each
    ``(kernel, arguments, context)``; ``refreshes``, functions of no arguments that compute again,
    in place, an argument derived from the weights (``note_refresh``: the bias sum);
    ``replayable``: whether every call was one a ``Replay`` can make again (``_run`` given a
    context, and W_hh's panels kept, not packed for the call); ``settled``: whether a later call
    would make the same calls (not where this one packed the panels that later calls find kept:
    the units split's are an argument, with a flag)."""

    __slots__ = ("calls", "refreshes", "replayable", "settled")

    def __init__(self):
        self.calls, self.refreshes, self.replayable, self.settled = [], [], True, True

    def note(self, kernel, arguments, context):
        if context is None:
            self.replayable = False
        self.calls.append((kernel, arguments, context))


_RECORDING = contextvars.ContextVar("lstm_numba_recording", default=None)
"""The ``Recording`` this thread's forward is noted in (``recording``), or None."""


def note_refresh(function, *arguments):
    """Have a replay of this thread's recording (``recording``), if any, call
    ``function(*arguments)`` before its kernels: it computes again, in place, an argument derived
    from the weights, which may have changed in place since (``LSTM._cpu_layer``'s bias sum)."""
    taping = _RECORDING.get()
    if taping is not None:
        taping.refreshes.append(functools.partial(function, *arguments))


def note_moved():
    """Note, in this thread's recording (``recording``) if any, that the forward moves data
    outside the kernels (a direction's output copied into y), which a ``Replay`` would not: the
    recording is not one to replay."""
    taping = _RECORDING.get()
    if taping is not None:
        taping.replayable = False


@contextlib.contextmanager
def recording():
    """A context in which this thread's forwards run as ever and note their kernel calls in the
    ``Recording`` it yields (``Replay.of``)."""
    taping = Recording()
    token = _RECORDING.set(taping)
    try:
        yield taping
    finally:
        _RECORDING.reset(token)


class Replay:
    """A forward's kernel calls made again on a new x of the shape and dtype it ran on, into a new
    y: ``y = replay(x)``, without the Python that planned them (``model.Replays``: a ``Stream``'s
    chunks, ≈ 5–15 µs a one-step call at H ≤ 128, docs/performance.md, item 69). Every other
    argument is the recorded one, so only a forward whose arguments stay what they were may be
    replayed: weights changed only in place (a model's are), panels kept or packed by the kernel
    itself, states updated in place, and what is derived from the weights computed again first (the
    recording's ``refreshes``)."""

    __slots__ = ("calls", "refreshes", "y_shape", "y_dtype")

    def __init__(self, calls, refreshes, y_shape, y_dtype):
        self.calls, self.refreshes = calls, refreshes
        self.y_shape, self.y_dtype = y_shape, y_dtype

    @classmethod
    def of(cls, taping, x, y):
        """The ``Replay`` of the calls ``taping`` (a ``Recording``) noted of a forward from x
        (B, T, I) into y, or None where it cannot be replayed: a call ``_run`` cannot make again,
        or an argument other than x and y that is a view of either (a new x or y would not
        move it)."""
        if not taping.replayable or not taping.calls:
            return None
        calls = []
        for kernel, arguments, context in taping.calls:
            xs = [i for i, value in enumerate(arguments) if value is x]
            ys = [i for i, value in enumerate(arguments) if value is y]
            template = list(arguments)
            for i, value in enumerate(template):
                if i in xs or i in ys:
                    template[i] = None  # not kept alive
                elif isinstance(value, np.ndarray) and (
                    np.may_share_memory(value, x) or np.may_share_memory(value, y)
                ):
                    return None
            context = None if context is contextlib.nullcontext else context  # 0.35 µs
            calls.append((kernel, template, xs, ys, context))
        return cls(calls, taping.refreshes, y.shape, y.dtype)

    def __call__(self, x):
        for refresh in self.refreshes:
            refresh()
        y = np.empty(self.y_shape, self.y_dtype)
        for kernel, template, xs, ys, context in self.calls:
            arguments = template.copy()
            for i in xs:
                arguments[i] = x
            for i in ys:
                arguments[i] = y
            if context is None:
                kernel(*arguments)
                continue
            with context():
                kernel(*arguments)
        return y


@njit(**KERNEL_OPTIONS)
def _address(array):
    """The address of ``array``'s first element: 0.2 µs, against 2 for ``__array_interface__``."""
    return array.ctypes.data


def running_dry():
    """Whether this thread's forward runs in a dry run (``dry_run``), where no data need move."""
    return _DRY_RUN.get() is not None


def _run(kernel, arguments, context=None):
    """``kernel(*arguments)``, inside ``context()`` where a context manager's factory is given
    (the threads' ``_OnNumbaThreads``, ``_calling_thread_blas``); or in a dry run (``dry_run``)
    the call noted instead; W_hh is packed in a dry run too (``pack_panels``), and once an array
    where the panels are kept (``KeptPanels``). A call with a context, ``contextlib.nullcontext``
    for none, is one a recording (``recording``) may replay: the call is all there is to it (no
    workspace filled before, nothing moved after). (A tuple, not ``*arguments``: 0.04 µs a call
    against 0.2.)"""
    if kernel is pack_panels:
        return _panels_of(*arguments)
    taping, run = _RECORDING.get(), _DRY_RUN.get()
    if taping is not None:  # a dry run's call is not one to replay: its panels are the dry run's
        taping.note(kernel, arguments, context if run is None else None)
    if run is None:
        if context is None:
            return kernel(*arguments)
        with context():
            return kernel(*arguments)
    run.signatures.add((kernel, tuple(map(kernel.typeof_pyval, arguments))))
    return None


def _panels_of(weights):
    """``pack_panels(weights)`` (W_hh or W_ih), packed once where the panels are kept
    (``KeptPanels``: read-only weights), or in a dry run (``dry_run``), during which nothing
    changes them."""
    kept = _KEPT_PANELS.get()
    if kept is None or weights.flags.writeable:
        run = _DRY_RUN.get()
        if run is None:
            taping = _RECORDING.get()
            if taping is not None:  # packed for this call only: not to be read again
                taping.replayable = False
            return pack_panels(weights)
        kept = run.panels
    # an array of its own (a model's stack) by its identity (0.1 µs), a view by its address
    key = id(weights) if weights.base is None else (_address(weights), weights.shape)
    found = kept.get(key)
    if found is None:  # the entry holds the weights too: no other array takes their key
        found = kept[key] = (weights, pack_panels(weights))
    return found[1]


def _unit_split_forward(
    x, w_ih, w_hh, bias, h, c, y, column, lengths, steps, reverse, batch_first, parts
):  # fmt: skip
    """``lstm_unit_split_forward`` for a few rows in one direction, written to y's columns
    [column, column + H): h, c (B, H) the initial states, overwritten with the final ones; other
    arguments as ``lstm_layer_forward``'s for D = 1 (``reverse`` only for rows of one length)."""
    batch, hidden = h.shape
    bounds = np.array([p * hidden // parts for p in range(parts + 1)], dtype=np.int64)
    widest = -(-hidden // parts)  # the most units a part gets from these bounds
    width = panel_width.py_func(w_hh.itemsize)
    packed = panel_count.py_func(4 * widest, w_hh.itemsize)
    packing_repays = unit_split_packs(batch, hidden, steps)
    chunk = projection_steps.py_func(batch, steps)
    # over few steps the parts read W_hh as it is, unless a frozen model keeps it packed: panels
    # None compiles a kernel without the register tiles; gate_sums None (one row, or rows over
    # enough steps), one without the dot tile
    kept = panels_kept()
    panels, input_panels, panels_packed, keep = None, None, False, None
    if packing_repays or kept:
        weights, shapes = [w_hh], [(parts, packed, hidden, width)]
        if kept and batch * chunk < SMALL_PRODUCT_ROWS:  # W_ih too, for few rows' projections
            weights.append(w_ih)
            shapes.append((parts, packed, w_ih.shape[1], width))
        found, panels_packed, keep = _unit_split_panels(weights, shapes)
        panels, input_panels = found[0], (found[1] if len(found) > 1 else None)
    unpacked_rows = batch > 1 and not packing_repays
    gate_sums = np.empty((parts, batch * widest), dtype=h.dtype) if unpacked_rows else None
    projected = np.empty((parts, 4, chunk * batch * widest), dtype=x.dtype)
    bias_parts = np.empty((parts, 4 * widest), dtype=bias.dtype)
    c_parts = np.empty((parts, batch * widest), dtype=c.dtype)
    counters = np.empty((parts + 1) * COUNTER_STRIDE, dtype=np.int64)
    h_buffer = np.empty((2, batch, hidden), dtype=h.dtype)
    arguments = (
        x, w_ih, w_hh, bias, panels, input_panels, np.bool_(panels_packed), gate_sums, h_buffer, c,
        y, column, lengths, steps, reverse, batch_first, bounds, projected, bias_parts, c_parts,
        counters,
    )  # fmt: skip
    call = functools.partial(_UnitSplitCall, h, h_buffer, counters, steps)
    _run(lstm_unit_split_forward, arguments, call)
    if keep is not None and not running_dry():  # packed by this call, for the later ones
        keep()
        taping = _RECORDING.get()
        if taping is not None:  # this call's panels_packed is False: a later call is to replay
            taping.settled = False


class _UnitSplitCall(_OnNumbaThreads):
    """``_OnNumbaThreads`` around a call of ``lstm_unit_split_forward``, and what the call needs
    around it, so that a ``Replay`` makes it again: its ``counters`` zeroed and the initial state
    h (B, H) in ``h_buffer``'s first row before, the final state (its row ``steps % 2``) into h
    after."""

    def __init__(self, h, h_buffer, counters, steps):
        self.h, self.h_buffer, self.counters, self.steps = h, h_buffer, counters, steps

    def __enter__(self):
        super().__enter__()  # the driver's lock first: the workspaces are a replay's, shared
        self.counters[:] = 0
        self.h_buffer[0] = self.h

    def __exit__(self, *exception):
        try:
            if exception[0] is None:
                self.h[:] = self.h_buffer[self.steps % 2]
        finally:
            super().__exit__(*exception)


def _unit_split_panels(weights, shapes):
    """``(panels, packed, keep)`` for ``_unit_split_forward``: the parts' panels of each of
    ``weights`` (W_hh, and W_ih or not), of ``shapes``, in a tuple; whether they hold the
    weights' rows already, kept from an earlier call where the weights are read-only and the
    panels kept (``KeptPanels``); and None, or where they are to be kept but are not packed yet,
    the function that keeps them once a call has packed them."""
    kept = _KEPT_PANELS.get()
    keyed = kept is not None and not any(w.flags.writeable for w in weights)
    key = ("units", *((_address(w), w.shape) for w in weights), *shapes) if keyed else None
    found = kept.get(key) if keyed else None
    if found is not None:
        return found[1], True, None
    fresh = tuple(np.empty(shape, dtype=w.dtype) for w, shape in zip(weights, shapes, strict=True))
    if not keyed:
        return fresh, False, None
    return fresh, False, functools.partial(kept.setdefault, key, (tuple(weights), fresh))


def _direction_runner(y, w_ih, w_hh, w_hr, bias, cell, lengths, batch_first, traces):
    """``run(d, h, c, out, column, lengths_now, first_time, y_shift)``: direction d of a layer of
    two on its input y (every row), on the calling thread, from states h (B, H_out) and c (B, H)
    (updated) into ``out``'s columns from ``column`` on, arguments as ``lstm_rows_forward``'s; W_hh
    read as ``plan_forward`` says for the rows of ``lengths`` (B,) (packed here, once)."""
    batch, hidden = lengths.size, w_hh.shape[1] // 4
    product, _, _ = plan_forward(batch, y.shape[2], hidden, int(lengths.max()))
    panels = _run(pack_panels, (w_hh,)) if product == RECURRENT_PANELS else None
    unpacked = w_hh if panels is None else None  # the worker reads W_hh from one or the other
    rows = np.arange(batch)

    def run(d, h, c, out, column, lengths_now, first_time, y_shift=0):
        arguments = (
            y, rows, w_ih[d], direction_of(unpacked, d), direction_of(w_hr, d), bias[d], cell, h,
            c, out, column, lengths_now, first_time, d == 1, batch_first, product, panels, None, 0,
            batch, traces, d, 0, y_shift,
        )  # fmt: skip
        _run(lstm_rows_forward, arguments)

    return run


def _side_by_side(*phases):
    """Run each phase, a pair of functions, one on this thread and one on another, side by side,
    one phase after the other, BLAS on one thread; in this thread's context (a dry run,
    ``dry_run``, runs the other thread dry too). Where a forward has one thread
    (``forward_threads``), both on this one, the other's first (a phase's pair either way round,
    save the recomputing helper, which waits for the windows the other leaves it)."""
    if forward_threads() < 2:
        for here, there in phases:
            there()
            here()
        return
    with _PARALLEL_FORWARD, _BlasOnOneThread(), ThreadPoolExecutor(1) as other_thread:
        for here, there in phases:
            running = other_thread.submit(contextvars.copy_context().run, there)
            here()
            running.result()


def _time_steps(array, batch_first, start, stop):
    """``array``'s steps [start, stop): (B, T', ·) or (T', B, ·)."""
    return array[:, start:stop] if batch_first else array[start:stop]


def lstm_directions_in_halves(
    y, w_ih, w_hh, w_hr, bias, cell, h, c, lengths, batch_first, traces
):  # fmt: skip
    """A layer of two directions on y in place, its input the layer below's output: side by side, a
    thread each, in two halves of time, M = T // 2. First the forward direction over [0, M) and the
    reverse one from each row's last step down to M, both into an array of half y's size,
    ``pending`` (the other direction still has to read those inputs); then the forward one over [M,
    T) and the reverse one over [0, M), each on y in place (the other direction has read those
    inputs), and ``pending`` copied into y. Half of y beyond y, as in turn, with the directions
    still side by side. Arguments as ``lstm_layer_forward``'s for D = 2; y (B, T, 2·H_out) or (T, B,
    2·H_out)."""
    steps = y.shape[1] if batch_first else y.shape[0]
    half, width = steps // 2, h.shape[2]
    # the forward direction's output at times [0, M), the reverse one's at [M, T); zeros where
    # rows shorter than T leave it unwritten (y is zero past each row's length)
    new_array = np.zeros if int(lengths.min()) < steps else np.empty
    pending = new_array((*y.shape[:2], width), y.dtype)
    early, late = np.minimum(lengths, half), np.maximum(lengths - half, 0)
    run = _direction_runner(y, w_ih, w_hh, w_hr, bias, cell, lengths, batch_first, traces)
    note_moved()
    _side_by_side(
        (lambda: run(0, h[0], c[0], pending, 0, early, 0),
         lambda: run(1, h[1], c[1], pending, 0, late, half)),
        (lambda: run(0, h[0], c[0], y, 0, late, half),
         lambda: run(1, h[1], c[1], y, width, early, 0)),
    )  # fmt: skip
    if running_dry():
        return
    _time_steps(y, batch_first, 0, half)[..., :width] = _time_steps(pending, batch_first, 0, half)
    _time_steps(y, batch_first, half, steps)[..., width:] = _time_steps(
        pending, batch_first, half, steps
    )


RECOMPUTE_WINDOW_STEPS = range(32, 129, 16)
"""Steps a window of ``lstm_directions_recomputed`` may have (``recompute_plan``): each direction
runs a window's steps a call, so that its workspace is a window's; the forward direction's
states are kept at the start of each, its output recomputed window by window into arrays of that
many steps; shorter windows project in smaller GEMMs (``RECOMPUTE_WINDOW_SLACK``)."""

RECOMPUTE_HELPER_WINDOWS = 2
"""Windows the forward direction of ``lstm_directions_recomputed`` recomputes ahead of the reverse
one on the thread that has finished its own part: arrays of a window's output each."""

RECOMPUTE_WINDOW_SLACK = 0.02
"""``recompute_plan`` takes the longest window whose plan's steps are within this share of the
fewest: the step count leaves out that a shorter window's projection runs in smaller GEMMs (and
a call, ≈ 4 µs of Python, a window and direction), which weighs on short steps (Zen 4, one
process: a direction of two rows, I = 256, H = 128, 8.4 µs a step in windows of 48 steps, 7.8 in
128; two layers of (2, 50000, 32, 64), windows of 64 steps 320–341 ms, of 128 steps 305–309 for
2.5 % fewer pending steps)."""


def recompute_plan(budget_bytes, lengths, time_steps, inputs, hidden, width, itemsize):
    """``(U, K)`` for ``lstm_directions_recomputed`` within ``budget_bytes``, for rows of
    ``lengths`` (B,) over ``time_steps`` T, ``inputs`` I, ``hidden`` H, H_out = ``width``.
    For each window of K steps (``RECOMPUTE_WINDOW_STEPS``, at most T): out of the budget, the
    workspaces of two directions run a window at a time (``rows_workspace_bytes``), the window's
    1 + ``RECOMPUTE_HELPER_WINDOWS`` arrays and the states kept at each of the A / K windows'
    starts (H_out + H a row); the reverse direction's pending U steps the rest, at most T/2, 0
    where nothing is left; time max(A, U) + A + U/2 steps for A = T − U. The longest window
    within ``RECOMPUTE_WINDOW_SLACK`` of the fastest."""
    step_bytes = lengths.size * width * itemsize  # a step's output of one direction
    plans = []  # (steps' time, U, K)
    for window in sorted({min(window, time_steps) for window in RECOMPUTE_WINDOW_STEPS}):
        workspace = 2 * rows_workspace_bytes(lengths.size, window, inputs, hidden, width, itemsize)
        budget_steps = max(0, (budget_bytes - workspace) / step_bytes)
        states = (width + hidden) / width / window  # a window's states, in steps' outputs, a step
        # U + 3K + (A + K)·states fits: A / K windows' states, rounded up
        free = budget_steps - (1 + RECOMPUTE_HELPER_WINDOWS) * window
        free -= states * (time_steps + window)
        pending = free / (1 - states) if states < 1 else 0
        pending = int(max(0, min(pending, time_steps // 2)))
        ahead = time_steps - pending
        plans.append((max(ahead, pending) + ahead + pending / 2, pending, window))
    fastest = min(time for time, _, _ in plans)
    near = [plan for plan in plans if plan[0] <= (1 + RECOMPUTE_WINDOW_SLACK) * fastest]
    _, pending, window = max(near, key=lambda plan: plan[2])
    return pending, window


def lstm_directions_recomputed(
    y, w_ih, w_hh, w_hr, bias, cell, h, c, lengths, batch_first, pending_steps, window
):  # fmt: skip
    """A layer of two directions on y in place, as ``lstm_directions_in_halves``, that holds the
    reverse direction's output of the last U = ``pending_steps`` steps beyond y instead of half
    of y, by computing the forward direction over the first A = T − U steps twice. Side by side,
    a thread each, each direction a window of K = ``window`` steps a call (``recompute_plan``).
    First the forward direction over [0, A), keeping only its states at each window's start,
    and the reverse one from each row's last step down to A into ``pending`` (U steps). Then the
    forward one over [A, T) on y in place, and on the other thread, window by window down from A,
    the forward direction over the window again, from its states there, into an array of K
    steps, the reverse one over the window on y in place, and the forward output copied in; the
    first thread, done, recomputes the forward direction's next windows
    (``RECOMPUTE_HELPER_WINDOWS`` ahead at most). Then ``pending`` into y. Beyond y: U + 3K steps'
    output of one direction, 2 (B, H) states a window and two workspaces of K steps
    (``rows_workspace_bytes``). Time: max(A, U) + A + U/2 steps against the halves' T (1.25 T
    for U = T/2). Arguments as ``lstm_directions_in_halves``'s, without traces."""
    steps = y.shape[1] if batch_first else y.shape[0]
    split, width = steps - pending_steps, h.shape[2]
    starts = range(0, split, window)

    def steps_shape(count):
        return (lengths.size, count, width) if batch_first else (count, lengths.size, width)

    padded = int(lengths.min()) < steps
    pending = (np.zeros if padded else np.empty)(steps_shape(pending_steps), y.dtype)
    own_window = np.empty(steps_shape(window), y.dtype)
    helper_windows = queue.SimpleQueue()  # the helper's free arrays
    for _ in range(RECOMPUTE_HELPER_WINDOWS):
        helper_windows.put(np.empty_like(own_window))
    saved_h = np.empty((len(starts), *h.shape[1:]), h.dtype)
    saved_c = np.empty((len(starts), *c.shape[1:]), c.dtype)
    run = _direction_runner(y, w_ih, w_hh, w_hr, bias, cell, lengths, batch_first, None)
    note_moved()
    dry = running_dry()
    claim = threading.Lock()  # guards next_window and recomputed
    next_window = [len(starts) - 1]  # the highest window no thread has claimed to recompute
    recomputed = {}  # window: (array, threading.Event set when the helper has written it)

    def valid_steps(start, stop):  # each row's steps in [start, stop)
        return np.clip(lengths - start, 0, stop - start)

    def in_window(k):
        return valid_steps(starts[k], min(starts[k] + window, split))

    def by_windows(d, out, column, start, y_shift):  # direction d over [start, T) on h[d], c[d]
        firsts = range(start, steps, window)
        for first in reversed(firsts) if d == 1 else firsts:
            stop = min(first + window, steps)
            run(d, h[d], c[d], out, column, valid_steps(first, stop), first, y_shift)

    def recompute(k, forward_y):
        if padded and not dry:
            forward_y.fill(0)  # a window before's outputs past these rows' lengths
        run(0, saved_h[k], saved_c[k], forward_y, 0, in_window(k), starts[k], starts[k])

    def forward_keeping_states():
        for k, start in enumerate(starts):
            saved_h[k], saved_c[k] = h[0], c[0]
            run(0, h[0], c[0], own_window, 0, in_window(k), start, start)

    def reverse_by_windows():
        try:
            for k in reversed(range(len(starts))):
                with claim:
                    own = next_window[0] == k
                    if own:
                        next_window[0] -= 1
                if own:
                    forward_y = own_window
                    recompute(k, forward_y)
                else:
                    forward_y, written = recomputed.pop(k)
                    written.wait()
                run(1, h[1], c[1], y, width, in_window(k), starts[k])
                if not dry:
                    stop = min(starts[k] + window, split)
                    window_y = _time_steps(y, batch_first, starts[k], stop)
                    window_y[..., :width] = _time_steps(forward_y, batch_first, 0, stop - starts[k])
                if not own:
                    helper_windows.put(forward_y)
        finally:  # the helper, waiting for an array or about to, stops
            with claim:
                next_window[0] = -1
            helper_windows.put(None)

    def forward_late_then_help():
        by_windows(0, y, 0, split, 0)
        while True:
            forward_y = helper_windows.get()  # one the reverse direction is done with
            with claim:
                k = next_window[0]
                if k < 0:
                    return
                next_window[0] -= 1
                written = threading.Event()
                recomputed[k] = forward_y, written
            try:
                recompute(k, forward_y)
            finally:
                written.set()

    _side_by_side(
        (forward_keeping_states, lambda: by_windows(1, pending, 0, split, split)),
        (forward_late_then_help, reverse_by_windows),
    )
    if not dry:
        _time_steps(y, batch_first, split, steps)[..., width:] = pending


def lstm_layer_forward(
    x, w_ih, w_hh, w_hr, bias, cell, h, c, y, lengths, steps, backward, batch_first, traces,
    x_rows=None, column=0, y_first_row=0,
):  # fmt: skip
    """One LSTM layer, all directions, over whole sequences, on as many threads as pay.

    Arguments as ``lstm_partitioned_forward``; steps: the longest of lengths; x_rows None reads
    batch row b at x's row b; x and y may hold more rows than h and c: a group of rows read
    where they are and written at y's rows from ``y_first_row`` on
    (``LSTM._run_directions_in_turn``). With
    one work item (one direction, one slice of
    rows) BLAS keeps its own threads. Several run on threads of their own, each with BLAS on
    one thread for its rows, and calls from other Python threads wait for the driver
    (``_PARALLEL_FORWARD``); or, where threads do not pay (``plan_forward``) and in a process
    forked after GNU OpenMP started (``_FORKED_FROM_GNU_OPENMP``), one after another on this
    thread. A batch of up to five rows may instead have its hidden units
    split over the threads (``plan_unit_split``, ``lstm_unit_split_forward``), and its two
    directions run one after another (``directions_in_turn``).
    """
    directions, batch, _ = h.shape
    seed_cell = cell is None and traces is None and w_hr is None
    hidden, width = c.shape[2], h.shape[2]
    at_once = 1 if directions_in_turn(w_hh, batch) else directions  # directions side by side
    parts = 1  # the units split, where each direction run on its own takes it
    x_batch = x.shape[0 if batch_first else 1]
    in_order = x_rows is None or np.array_equal(x_rows, np.arange(batch))
    if in_order and x_batch == batch and y_first_row == 0:  # x's rows and y's as they are
        parts = unit_split_parts(lengths, steps, hidden, at_once, backward, seed_cell, c.itemsize)
        if at_once < directions:  # and the reverse direction on its own
            reverse = unit_split_parts(lengths, steps, hidden, 1, True, seed_cell, c.itemsize)
            parts = min(parts, reverse)
    if parts > 1:  # each direction in turn, on all threads
        for first in range(directions):
            _unit_split_forward(
                x, w_ih[first], w_hh[first], bias[first], h[first], c[first], y,
                column + first * width, lengths, steps, first == 1 or backward, batch_first, parts,
            )  # fmt: skip
        return
    if batch > 1:
        at_once = directions  # rows split over the threads each read all of W_hh: side by side
    if x_rows is None:
        x_rows = np.arange(batch)
    product, partitions, parallel = plan_forward(batch, x.shape[2], hidden, steps, at_once)
    if not parallel:  # one slice of rows (``plan_forward``): each direction on this thread
        at_once = 1
    if batch == 1 and one_row_packs(w_hh, steps, at_once > 1):
        product = RECURRENT_PANELS
    panels = _run(pack_panels, (w_hh,)) if product == RECURRENT_PANELS else None
    unpacked = w_hh if panels is None else None  # the worker reads W_hh from one or the other
    # a frozen model's W_ih packed too, where a slice's projections are of few rows
    few_rows = -(-batch // partitions) * steps < SMALL_PRODUCT_ROWS
    input_panels = _run(pack_panels, (w_ih,)) if few_rows and panels_kept() else None
    if at_once * partitions > 1:  # every direction at once (in turn here: one row, one slice)
        arguments = (
            x, x_rows, w_ih, unpacked, w_hr, bias, cell, h, c, y, column, lengths, backward,
            batch_first, product, panels, input_panels, partitions, traces, y_first_row,
        )  # fmt: skip
        _run(lstm_partitioned_forward, arguments, _OnNumbaThreads)
        return
    for first in range(directions):
        arguments = (
            x, x_rows, w_ih[first], direction_of(unpacked, first), direction_of(w_hr, first),
            bias[first], cell, h[first], c[first], y, column + first * width, lengths, 0,
            first == 1 or backward, batch_first, product, panels, input_panels, 0, batch, traces,
            first, y_first_row, 0,
        )  # fmt: skip
        if not parallel:  # too small for BLAS to start its threads
            _run(lstm_rows_forward, arguments, contextlib.nullcontext)
            continue
        _run(lstm_rows_forward, arguments, functools.partial(_calling_thread_blas, w_hh[first]))
