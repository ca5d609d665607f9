"""CPU kernels: the seed's equations compiled with ``@njit`` over arrays.

Layers of names, from the inside out: scalar equations (``equations``), elementwise ufuncs of them
(for the public gate functions), the fused per-step kernel, and the whole-sequence layer forward.
Nothing here validates its arguments; the plain-Python wrappers in ``gates`` and ``model`` do.
"""

import numpy as np
from numba import njit, vectorize

from lstm_numba import equations
from lstm_numba._config import FASTMATH, KERNEL_OPTIONS

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

PROJECTION_ROWS = 1024
"""Rows (time steps × batch) whose input projection one GEMM computes. Large enough for BLAS to
run near its peak, small enough that the workspace does not grow with the sequence length."""


@njit(**KERNEL_OPTIONS)
def lstm_step_pointwise(recurrent, projected, bias, h, c, y, t, batch_first):
    """Fused pointwise part of step ``t``: all four gates, the cell update and the hidden state.

    recurrent: (B, 4H) h_prev·W_hhᵀ; projected: (B, 4H) x_t·W_ihᵀ; bias: (4H,) b_ih + b_hh, gate
    blocks in PyTorch order i, f, g, o. h, c: (B, H), read as the previous states and overwritten
    with the new ones; y: (B, T, H) if ``batch_first`` else (T, B, H), step t written with h. No
    intermediate arrays: each gate pre-activation is read once and lives in registers.
    """
    batch, hidden = h.shape
    for b in range(batch):
        rec = recurrent[b]
        prj = projected[b]
        h_row = h[b]
        c_row = c[b]
        y_row = y[b, t] if batch_first else y[t, b]
        for j in range(hidden):
            h_new, c_new = equations.lstm_cell(
                rec[j] + prj[j] + bias[j],
                rec[hidden + j] + prj[hidden + j] + bias[hidden + j],
                rec[2 * hidden + j] + prj[2 * hidden + j] + bias[2 * hidden + j],
                rec[3 * hidden + j] + prj[3 * hidden + j] + bias[3 * hidden + j],
                c_row[j],
            )
            c_row[j] = c_new
            h_row[j] = h_new
            y_row[j] = h_new


@njit(**KERNEL_OPTIONS)
def lstm_layer_forward(x, w_ih, w_hh, bias, h, c, y, batch_first):
    """One LSTM layer in one direction over whole sequences; the time loop runs compiled.

    x: (B, T, I) if ``batch_first`` else (T, B, I); y: the output, (B, T, H) or (T, B, H), written.
    w_ih: (4H, I), w_hh: (4H, H), bias: (4H,) = b_ih + b_hh. h, c: (B, H), the initial states on
    entry and the final states on return. All C-contiguous, all float32 or all float64.

    The input projection runs as one GEMM per chunk of time steps (``PROJECTION_ROWS`` rows), so the
    workspace is (chunk, B, I + 4H) + (B, 4H) elements whatever T is. Each step is one GEMM for the
    recurrent term and one fused pointwise pass.
    """
    batch = h.shape[0]
    steps = x.shape[1] if batch_first else x.shape[0]
    inputs = x.shape[2]
    gate_rows = w_hh.shape[0]
    chunk = max(1, min(steps, PROJECTION_ROWS // max(batch, 1)))
    x_chunk = np.empty((chunk, batch, inputs), dtype=h.dtype)
    projected = np.empty((chunk, batch, gate_rows), dtype=h.dtype)
    recurrent = np.empty((batch, gate_rows), dtype=h.dtype)
    w_ih_t = w_ih.T
    w_hh_t = w_hh.T
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        for s in range(n):
            for b in range(batch):
                x_chunk[s, b] = x[b, t0 + s] if batch_first else x[t0 + s, b]
        np.dot(
            x_chunk[:n].reshape(n * batch, inputs),
            w_ih_t,
            projected[:n].reshape(n * batch, gate_rows),
        )
        for s in range(n):
            np.dot(h, w_hh_t, recurrent)
            lstm_step_pointwise(recurrent, projected[s], bias, h, c, y, t0 + s, batch_first)
