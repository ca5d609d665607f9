"""CPU kernels: the seed's equations compiled with ``@njit`` over arrays.

Layers of names, from the inside out: scalar equations (``equations``), elementwise ufuncs of them
(for the public gate functions), the fused per-step kernel, and the whole-sequence layer forward.
Nothing here validates its arguments; the plain-Python wrappers in ``gates`` and ``model`` do.
"""

import numpy as np
from numba import get_num_threads, njit, prange, vectorize
from threadpoolctl import ThreadpoolController

from lstm_numba import equations
from lstm_numba._config import FASTMATH, KERNEL_OPTIONS, REDUCTION_KERNEL_OPTIONS

_FLOAT_UNARY = ["float32(float32)", "float64(float64)"]
_FLOAT_BINARY = ["float32(float32, float32)", "float64(float64, float64)"]
_FLOAT_QUATERNARY = [
    "float32(float32, float32, float32, float32)",
    "float64(float64, float64, float64, float64)",
]
_UFUNC_OPTIONS = {"cache": True, "fastmath": FASTMATH}

sigmoid = vectorize(_FLOAT_UNARY, **_UFUNC_OPTIONS)(equations.sigmoid.py_func)
tanh = vectorize(_FLOAT_UNARY, **_UFUNC_OPTIONS)(equations.tanh.py_func)
cell_update = vectorize(_FLOAT_QUATERNARY, **_UFUNC_OPTIONS)(equations.cell_update.py_func)
hidden_state = vectorize(_FLOAT_BINARY, **_UFUNC_OPTIONS)(equations.hidden_state.py_func)

_BLAS_THREADS = ThreadpoolController()
"""Sets the thread count of the BLAS that SciPy loaded, around the parallel driver."""

PROJECTION_ROWS = 1024
"""Rows (time steps × batch) whose input projection one GEMM computes. Large enough for BLAS to
run near its peak, small enough that the workspace does not grow with the sequence length."""

TILED_BATCH = (2, 48)
"""Batch rows per thread for which ``recurrent_rows`` beats BLAS on the recurrent product
(measured on 2 cores, docs/performance.md): for one row BLAS's GEMV is faster; above, its packed
GEMM wins."""

TILED_MAX_HIDDEN = 512
"""Above this H, W_hh (16·H² bytes in float32) no longer fits the caches that ``recurrent_rows``
relies on, and BLAS's cache blocking wins at every batch size."""

PARTITION_MIN_BATCH = 4
"""Split the batch over the threads from this batch size on; below, one thread runs the sequence
and BLAS may use the others."""


def plan_forward(batch, hidden):
    """``(tiled, partitions)`` for ``lstm_layer_forward``: whether the recurrent product runs in
    ``recurrent_rows`` (else BLAS), and over how many threads the batch rows are split."""
    partitions = min(get_num_threads(), batch) if batch >= PARTITION_MIN_BATCH else 1
    rows = -(-batch // partitions)
    tiled = TILED_BATCH[0] <= rows <= TILED_BATCH[1] and hidden <= TILED_MAX_HIDDEN
    return tiled, partitions


@njit(**REDUCTION_KERNEL_OPTIONS)
def recurrent_rows(h, w_hh, out):
    """``out = h · w_hhᵀ``: h (B, H), w_hh (4H, H), out (B, 4H).

    A register-tiled product for small batches, where BLAS spends its time repacking W_hh on every
    call: each tile is 4 batch rows × 2 weight rows (4H is even), so one weight load feeds four
    multiply-adds and W_hh streams through the cache once per 4 rows. The dot products vectorize
    over H (``reassoc``).
    """
    batch, hidden = h.shape
    zero = h.dtype.type(0)
    for b0 in range(0, batch, 4):
        rows = min(4, batch - b0)
        # a partial tile repeats row b0; its extra sums are computed and dropped
        h0 = h[b0]
        h1 = h[b0 + 1] if rows > 1 else h0
        h2 = h[b0 + 2] if rows > 2 else h0
        h3 = h[b0 + 3] if rows > 3 else h0
        for n in range(0, w_hh.shape[0], 2):
            w0 = w_hh[n]
            w1 = w_hh[n + 1]
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
            for k in range(hidden):
                v0 = w0[k]
                v1 = w1[k]
                a00 += h0[k] * v0
                a01 += h0[k] * v1
                a10 += h1[k] * v0
                a11 += h1[k] * v1
                a20 += h2[k] * v0
                a21 += h2[k] * v1
                a30 += h3[k] * v0
                a31 += h3[k] * v1
            out[b0, n] = a00
            out[b0, n + 1] = a01
            if rows > 1:
                out[b0 + 1, n] = a10
                out[b0 + 1, n + 1] = a11
            if rows > 2:
                out[b0 + 2, n] = a20
                out[b0 + 2, n + 1] = a21
            if rows > 3:
                out[b0 + 3, n] = a30
                out[b0 + 3, n + 1] = a31


@njit(**KERNEL_OPTIONS)
def lstm_step_pointwise(recurrent, projected, bias, h, c, y, t, batch_first, row_offset):
    """Fused pointwise part of step ``t``: all four gates, the cell update and the hidden state.

    recurrent: (B', 4H) h_prev·W_hhᵀ; projected: (B', 4H) x_t·W_ihᵀ; bias: (4H,) b_ih + b_hh, gate
    blocks in PyTorch order i, f, g, o. h, c: (B', H), the previous states, overwritten with the new
    ones; y: (B, T, H) if ``batch_first`` else (T, B, H), step t of rows row_offset + [0, B')
    written with h. No intermediate arrays: each gate pre-activation is read once and lives in
    registers.
    """
    batch, hidden = h.shape
    # per-gate slices, indexed from 0, keep the inner loop simple enough for LLVM to vectorize
    i_gate = slice(0, hidden)
    f_gate = slice(hidden, 2 * hidden)
    g_gate = slice(2 * hidden, 3 * hidden)
    o_gate = slice(3 * hidden, 4 * hidden)
    b_i, b_f, b_g, b_o = bias[i_gate], bias[f_gate], bias[g_gate], bias[o_gate]
    for b in range(batch):
        rec = recurrent[b]
        prj = projected[b]
        r_i, r_f, r_g, r_o = rec[i_gate], rec[f_gate], rec[g_gate], rec[o_gate]
        p_i, p_f, p_g, p_o = prj[i_gate], prj[f_gate], prj[g_gate], prj[o_gate]
        h_row = h[b]
        c_row = c[b]
        y_row = y[row_offset + b, t] if batch_first else y[t, row_offset + b]
        for j in range(hidden):
            h_new, c_new = equations.lstm_cell(
                r_i[j] + p_i[j] + b_i[j],
                r_f[j] + p_f[j] + b_f[j],
                r_g[j] + p_g[j] + b_g[j],
                r_o[j] + p_o[j] + b_o[j],
                c_row[j],
            )
            c_row[j] = c_new
            h_row[j] = h_new
            y_row[j] = h_new


@njit(**KERNEL_OPTIONS)
def lstm_rows_forward(x, w_ih, w_hh, bias, h, c, y, batch_first, tiled, row_start, row_stop):
    """Serial worker: batch rows [row_start, row_stop) of one layer in one direction, all steps.

    x: (B, T, I) if ``batch_first`` else (T, B, I); y: the output, (B, T, H) or (T, B, H), written.
    w_ih: (4H, I), w_hh: (4H, H), bias: (4H,) = b_ih + b_hh. h, c: (B, H), the initial states on
    entry and the final states on return. All C-contiguous, all float32 or all float64.
    ``tiled``: the recurrent product runs in ``recurrent_rows``, else in BLAS.

    The input projection runs as one GEMM per chunk of time steps (``PROJECTION_ROWS`` rows), so
    the workspace is (chunk, B', I + 4H) + (B', 4H) elements whatever T is. Each step is one
    recurrent product and one fused pointwise pass.
    """
    batch = row_stop - row_start
    steps = x.shape[1] if batch_first else x.shape[0]
    inputs = x.shape[2]
    gate_rows = w_hh.shape[0]
    chunk = max(1, min(steps, PROJECTION_ROWS // max(batch, 1)))
    x_chunk = np.empty((chunk, batch, inputs), dtype=h.dtype)
    projected = np.empty((chunk, batch, gate_rows), dtype=h.dtype)
    recurrent = np.empty((batch, gate_rows), dtype=h.dtype)
    h_rows = h[row_start:row_stop]
    c_rows = c[row_start:row_stop]
    w_ih_t = w_ih.T
    w_hh_t = w_hh.T
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        for s in range(n):
            for b in range(batch):
                row = row_start + b
                x_chunk[s, b] = x[row, t0 + s] if batch_first else x[t0 + s, row]
        np.dot(
            x_chunk[:n].reshape(n * batch, inputs),
            w_ih_t,
            projected[:n].reshape(n * batch, gate_rows),
        )
        for s in range(n):
            if tiled:
                recurrent_rows(h_rows, w_hh, recurrent)
            else:
                np.dot(h_rows, w_hh_t, recurrent)
            lstm_step_pointwise(
                recurrent, projected[s], bias, h_rows, c_rows, y, t0 + s, batch_first, row_start
            )


@njit(parallel=True, **KERNEL_OPTIONS)
def lstm_partitioned_forward(x, w_ih, w_hh, bias, h, c, y, batch_first, tiled, partitions):
    """Parallel driver: the batch split into ``partitions`` slices of rows, one thread each.

    Batch rows are independent through the whole sequence, so the threads never wait for each
    other. Arguments as ``lstm_rows_forward``. BLAS must be limited to one thread meanwhile.
    """
    batch = h.shape[0]
    for part in prange(partitions):
        lstm_rows_forward(
            x, w_ih, w_hh, bias, h, c, y, batch_first, tiled,
            part * batch // partitions, (part + 1) * batch // partitions,
        )  # fmt: skip


def lstm_layer_forward(x, w_ih, w_hh, bias, h, c, y, batch_first):
    """One LSTM layer in one direction over whole sequences, on as many threads as pay.

    Arguments as ``lstm_rows_forward``. With one partition (small batches) BLAS keeps its own
    threads; with several, each thread runs BLAS single-threaded on its rows.
    """
    tiled, partitions = plan_forward(*h.shape)
    if partitions == 1:
        lstm_rows_forward(x, w_ih, w_hh, bias, h, c, y, batch_first, tiled, 0, h.shape[0])
    else:
        with _BLAS_THREADS.limit(limits=1, user_api="blas"):
            lstm_partitioned_forward(x, w_ih, w_hh, bias, h, c, y, batch_first, tiled, partitions)
