"""The two halves of a step on one thread: the recurrent product h·W_hhᵀ of one thread's rows, in
each of the ways a forward can run it (``cpu.plan_forward``): the register tile on packed W_hh,
the dot-product tile, BLAS; and the fused pointwise pass (``cpu.lstm_step_pointwise``): the
gates, the cell update and h. Also the packing of W_hh for the register tile, once a forward."""

import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

from lstm_numba import cpu

from .common import choose


@njit(cache=True, nogil=True)
def blas_product(h, w_hh, out):
    """BLAS's GEMM (GEMV for one row) from compiled code, as ``cpu.lstm_rows_forward`` calls it."""
    np.dot(h, w_hh.T, out)


class RecurrentProduct:
    """One step's recurrent product for B' rows on one thread (BLAS held to one thread)."""

    params = (
        choose([1, 2, 3, 4, 8, 16, 32, 64], [2]),
        choose([128, 256, 512], [8]),
        ["panels", "rows", "blas"],
    )
    param_names = ["rows", "hidden", "kernel"]

    def setup(self, rows, hidden, kernel):
        rng = np.random.default_rng(0)
        self.h = rng.standard_normal((rows, hidden)).astype(np.float32)
        self.w_hh = rng.standard_normal((4 * hidden, hidden)).astype(np.float32)
        self.panels = cpu.pack_panels(self.w_hh[None])[0]
        # the tile writes whole panels, in pairs: up to 31 columns past 4H
        padded = np.empty((rows, self.panels.shape[0] * self.panels.shape[2]), np.float32)
        out = np.empty((rows, 4 * hidden), np.float32)
        self.product = {
            "panels": lambda: cpu.recurrent_panels(self.h, self.panels, padded),
            "rows": lambda: cpu.dot_tile_product(self.h, self.w_hh, out),
            "blas": lambda: blas_product(self.h, self.w_hh, out),
        }[kernel]
        self.product()  # compile or load from the cache, which loads the BLAS np.dot calls
        # after that: threadpoolctl limits only the libraries already loaded
        self.limits = threadpool_limits(1, user_api="blas")

    def teardown(self, *_):
        self.limits.restore_original_limits()

    def time_product(self, *_):
        self.product()

    def track_gflops(self, rows, hidden, kernel):
        """Floating-point rate of the product, from the best of 20 calls."""
        best = np.inf
        for _ in range(20):
            start = time.perf_counter()
            self.product()
            best = min(best, time.perf_counter() - start)
        return 2 * rows * 4 * hidden * hidden / best / 1e9

    track_gflops.unit = "GFLOP/s"


class PointwiseStep:
    """One step's fused pointwise pass for B' rows of H units: five σ/tanh, the cell update and h
    a unit, from the step's two products and the bias."""

    params = (choose([1, 8, 32], [2]), choose([32, 256, 1024], [8]), ["float32", "float64"])
    param_names = ["rows", "hidden", "dtype"]

    def setup(self, rows, hidden, dtype):
        rng = np.random.default_rng(0)

        def normal(*shape):
            return rng.standard_normal(shape).astype(dtype)

        recurrent, projected = normal(rows, 4 * hidden), normal(rows, 4 * hidden)
        bias, c, h = normal(4 * hidden), normal(rows, hidden), normal(rows, hidden)
        y = np.zeros((rows, 1, hidden), dtype)  # (B, T, H): each row writes its step 0
        times = np.zeros(rows, np.int64)
        self.arguments = (
            recurrent, projected, bias, None, c, h, times, y, True, 0, True, 0, None, 0,
        )  # fmt: skip
        self.time_step()  # compile or load from the cache

    def time_step(self, *_):
        cpu.lstm_step_pointwise(*self.arguments)

    def track_ns_per_unit(self, rows, hidden, dtype):
        """Nanoseconds a hidden unit, from the best of 20 calls of 50 steps."""
        best = np.inf
        for _ in range(20):
            start = time.perf_counter()
            for _ in range(50):
                cpu.lstm_step_pointwise(*self.arguments)
            best = min(best, (time.perf_counter() - start) / 50)
        return best / (rows * hidden) * 1e9

    track_ns_per_unit.unit = "ns"


class PackPanels:
    """W_hh (4H, H) packed into the register tile's panels (``cpu.pack_rows``), as a forward does
    once a layer (or each part of the units split, its share), against a plain copy of W_hh."""

    params = (choose([256, 512, 1024], [8]), ["float32", "float64"])
    param_names = ["hidden", "dtype"]

    def setup(self, hidden, dtype):
        self.w_hh = np.random.default_rng(0).standard_normal((4 * hidden, hidden)).astype(dtype)
        self.rows = np.arange(4 * hidden)
        self.panels = cpu.pack_panels(self.w_hh[None])[0]  # compile or load from the cache

    def time_pack(self, *_):
        cpu.pack_rows(self.w_hh, self.rows, self.panels)

    def track_over_copy(self, *_):
        """Packing's time over a copy of W_hh into an existing array, best of 20 each."""
        copy = np.empty_like(self.w_hh)
        times = {}
        for name, run in (
            ("pack", self.time_pack),
            ("copy", lambda: np.copyto(copy, self.w_hh)),
        ):
            best = np.inf
            for _ in range(20):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            times[name] = best
        return times["pack"] / times["copy"]

    track_over_copy.unit = "ratio"
