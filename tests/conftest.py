import os
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

# Tests patch module constants that Numba freezes into the kernels it compiles (chunk sizes,
# thresholds, cache sizes). Compiled into the package's own on-disk cache, such a kernel would
# outlive the test run and serve every later forward (a projection chunk of 4 rows made
# (1, 128, 512, 512) 1.3x slower): the tests keep a cache of their own (before Numba is imported).
# Within it, a kernel compiled under a patch would serve later tests too: no test patches a
# constant that CPU kernels compile in (test_model.py checks).
os.environ["NUMBA_CACHE_DIR"] = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "numba"
)

TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
"""Relative error allowed against the float64 reference, per dtype."""


def assert_close(actual, expected, dtype=None):
    """Elementwise |actual − expected| ≤ tol·(|expected| + max(1, max|expected|)·0.1).

    The relative part is the contract (1e-5 in float32, 1e-12 in float64); the small absolute part,
    scaled to the array's magnitude, covers outputs that cancel to near zero.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tolerance = TOLERANCE[np.dtype(dtype or actual.dtype)]
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=0.1 * tolerance * scale)


@pytest.fixture
def rng(request):
    """A generator seeded by the test's name: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def run_python(*args, **environment):
    """``python *args`` in a fresh process, with the keyword arguments added to its environment;
    asserts that it succeeded and returns it (``.stdout``, ``.stderr``)."""
    result = subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result


def allocation_peak(function, *arguments, **keywords):
    """``(function(*arguments, **keywords), the peak of what the call allocated)``, in bytes, as
    tracemalloc counts them (NumPy's arrays and Numba's alike)."""
    tracemalloc.start()
    try:
        result = function(*arguments, **keywords)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def one_numba_thread():
    """The test's forwards on one of Numba's threads (restored after): where two threads run, a
    peak counts both threads' workspaces only where their calls overlap in time, which a loaded
    machine decides."""
    from numba import get_num_threads, set_num_threads

    threads = get_num_threads()
    set_num_threads(1)
    yield
    set_num_threads(threads)


def threads_at_any_size(monkeypatch):
    """Have the layers run on threads (``cpu.lstm_partitioned_forward``, the batch split;
    ``cpu.lstm_unit_split_forward``, a single row's units split) even at the small shapes of
    the tests, which take the calling thread otherwise."""
    from lstm_numba import cpu

    monkeypatch.setattr(cpu, "PARALLEL_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(cpu, "PARTITION_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(cpu, "UNIT_SPLIT_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(cpu, "UNIT_SPLIT_MIN_UNITS", 1)
    monkeypatch.setattr(cpu, "UNIT_SPLIT_MIN_UNITS_AGAINST_ROWS", 1)


@pytest.fixture
def ptx_without_a_gpu(monkeypatch):
    """numba-cuda asks the driver for the GPU's compute capability when it compiles a device
    function, even for PTX alone: without a usable GPU, a stand-in answers 9.0."""
    import types

    from lstm_numba import dispatch

    if not dispatch.cuda_status()[0]:
        from numba.cuda import dispatcher

        sm_90 = types.SimpleNamespace(compute_capability=(9, 0))
        monkeypatch.setattr(dispatcher, "get_current_device", lambda: sm_90)
