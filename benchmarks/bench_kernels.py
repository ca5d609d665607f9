"""The recurrent product h·W_hhᵀ of one thread's rows, in each of the ways a forward can run it
(``cpu.plan_forward``): the register tile on packed W_hh, the dot-product tile, BLAS."""

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
