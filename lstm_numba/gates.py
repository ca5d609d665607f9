"""The seed's equations as public functions on NumPy arrays, one line of the seed each.

Shapes: ``h_prev`` (B, H), ``x`` (B, I), ``c_prev`` (B, H), or (H,), (I,), (H,) for one row
unbatched (as ``torch.nn.LSTMCell`` takes it), the results shaped as ``h_prev``; gate weights
``W_*`` (H, H + I) act on the concatenation ``[h_prev, x]`` (hidden state first); biases ``b_*``
are (H,). All arrays of one call share one dtype, float32 or float64. The activations and the
cell update are the compiled equations the kernels use (``lstm_numba.equations``), applied
elementwise.
"""

import numpy as np

from lstm_numba import cpu
from lstm_numba._validation import as_float_array, check_same_dtype, check_shape


def _gate_preactivation(h_prev, x, W, b, gate):
    """W·[h_prev, x] + b for each batch row, after checking every shape: (B, H), or (H,) for
    one unbatched row."""
    h_prev = as_float_array("h_prev", h_prev)
    x = as_float_array("x", x)
    W = as_float_array(f"W_{gate}", W)
    b = as_float_array(f"b_{gate}", b)
    check_same_dtype({"h_prev": h_prev, "x": x, f"W_{gate}": W, f"b_{gate}": b})
    if h_prev.ndim not in (1, 2):
        raise ValueError(
            f"h_prev: expected a 2-D array (B, H) or, one row, a 1-D (H,), got shape {h_prev.shape}"
        )
    unbatched = h_prev.ndim == 1
    if unbatched and x.ndim != 1:
        raise ValueError(f"x: expected a 1-D array (I,), as h_prev is (H,); got shape {x.shape}")
    if unbatched:
        h_prev, x = h_prev[None], x[None]
    batch, hidden = h_prev.shape
    if x.ndim != 2 or x.shape[0] != batch:
        raise ValueError(f"x: expected a 2-D array (B, I) with B = {batch}, got shape {x.shape}")
    check_shape(f"W_{gate}", W, (hidden, hidden + x.shape[1]), "(H, H + I)")
    check_shape(f"b_{gate}", b, (hidden,), "(H,)")
    preactivation = np.concatenate([h_prev, x], axis=1) @ W.T + b
    return preactivation[0] if unbatched else preactivation


def _elementwise(ufunc, *arrays):
    """``ufunc(*arrays)``, one of ``cpu``'s with σ or tanh in it: NaN in gives NaN out without
    NumPy's "invalid value" warning, as ``np.tanh`` does: their clamps compile to x86's max and
    min, which raise the floating-point flag on NaN (``equations.saturate``)."""
    with np.errstate(invalid="ignore"):
        return ufunc(*arrays)


def forget_gate(h_prev, x, W_f, b_f):
    """f = σ(W_f·[h, x] + b_f): how much of each cell's old memory to keep. Returns (B, H)."""
    return _elementwise(cpu.sigmoid, _gate_preactivation(h_prev, x, W_f, b_f, "f"))


def input_gate(h_prev, x, W_i, b_i):
    """i = σ(W_i·[h, x] + b_i): how much of the candidate memory to write. Returns (B, H)."""
    return _elementwise(cpu.sigmoid, _gate_preactivation(h_prev, x, W_i, b_i, "i"))


def candidate_memory(h_prev, x, W_c, b_c):
    """C̃ = tanh(W_c·[h, x] + b_c): the new content proposed for the cell. Returns (B, H)."""
    return _elementwise(cpu.tanh, _gate_preactivation(h_prev, x, W_c, b_c, "c"))


def output_gate(h_prev, x, W_o, b_o):
    """o = σ(W_o·[h, x] + b_o): how much of the squashed cell state to expose. Returns (B, H)."""
    return _elementwise(cpu.sigmoid, _gate_preactivation(h_prev, x, W_o, b_o, "o"))


def cell_update(f, c_prev, i, c_tilde):
    """C = f ⊙ C_prev + i ⊙ C̃, pointwise. All (B, H); returns (B, H)."""
    arrays = {
        name: as_float_array(name, value)
        for name, value in (("f", f), ("c_prev", c_prev), ("i", i), ("c_tilde", c_tilde))
    }
    check_same_dtype(arrays)
    for name, array in arrays.items():
        check_shape(name, array, arrays["c_prev"].shape, "of c_prev")
    return cpu.cell_update(arrays["f"], arrays["c_prev"], arrays["i"], arrays["c_tilde"])


def hidden_state(o, c):
    """h = o ⊙ tanh(C), pointwise. Both (B, H); returns (B, H)."""
    o = as_float_array("o", o)
    c = as_float_array("c", c)
    check_same_dtype({"o": o, "c": c})
    check_shape("o", o, c.shape, "of c")
    return _elementwise(cpu.hidden_state, o, c)


def lstm_step(h_prev, c_prev, x, W_f, b_f, W_i, b_i, W_c, b_c, W_o, b_o):
    """One LSTM step, the seed line by line. Returns ``(h, C)``, each (B, H) (or (H,) for one
    unbatched row).

    ``lstm_numba.LSTM.gate_weights()`` gives a model's weights in this form:
    ``lstm_step(h, c, x, **model.gate_weights())``.
    """
    f = forget_gate(h_prev, x, W_f, b_f)
    c_prev = as_float_array("c_prev", c_prev)
    check_shape("c_prev", c_prev, f.shape, "(B, H) of h_prev")
    i = input_gate(h_prev, x, W_i, b_i)
    c_tilde = candidate_memory(h_prev, x, W_c, b_c)
    c = cell_update(f, c_prev, i, c_tilde)
    o = output_gate(h_prev, x, W_o, b_o)
    return hidden_state(o, c), c
