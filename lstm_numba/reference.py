"""A plain float64 NumPy LSTM, written for clarity: the oracle the tests compare against.

It shares no code with the kernels: its activations are SciPy's ``expit`` and NumPy's ``tanh``,
its loops are Python loops. Inputs of any float dtype are computed in float64.
"""

import numpy as np
from scipy.special import expit as sigmoid


def lstm_step(h_prev, c_prev, x, W_f, b_f, W_i, b_i, W_c, b_c, W_o, b_o):
    """The seed, line by line. h_prev, c_prev (B, H); x (B, I); W_* (H, H + I); b_* (H,).

    Returns ``(h, c)``, each (B, H) float64.
    """
    hx = np.concatenate([h_prev, x], axis=1).astype(np.float64)
    f = sigmoid(hx @ np.asarray(W_f, np.float64).T + b_f)
    i = sigmoid(hx @ np.asarray(W_i, np.float64).T + b_i)
    c_tilde = np.tanh(hx @ np.asarray(W_c, np.float64).T + b_c)
    c = f * c_prev + i * c_tilde
    o = sigmoid(hx @ np.asarray(W_o, np.float64).T + b_o)
    h = o * np.tanh(c)
    return h, c


def torch_to_seed_weights(weight_ih, weight_hh, bias_ih, bias_hh):
    """PyTorch's layout (gate blocks i, f, g, o; W_ih (4H, I), W_hh (4H, H), two biases) to the
    seed's per-gate ``W_* = [W_hh | W_ih]`` (H, H + I) and ``b_* = b_ih + b_hh`` (H,), float64."""
    hidden = np.shape(weight_hh)[1]
    weights = {}
    for block, gate in enumerate("ifco"):
        rows = slice(block * hidden, (block + 1) * hidden)
        weights[f"W_{gate}"] = np.concatenate(
            [np.asarray(weight_hh, np.float64)[rows], np.asarray(weight_ih, np.float64)[rows]],
            axis=1,
        )
        weights[f"b_{gate}"] = (
            np.asarray(bias_ih, np.float64)[rows] + np.asarray(bias_hh, np.float64)[rows]
        )
    return weights


def lstm_forward(x, state_dict, hx=None, batch_first=True):
    """One-layer LSTM over a batch of sequences, PyTorch's conventions.

    x: (B, T, I) if ``batch_first`` else (T, B, I); ``state_dict``: PyTorch's names and layouts
    (``weight_ih_l0`` (4H, I), ``weight_hh_l0`` (4H, H), ``bias_ih_l0``, ``bias_hh_l0`` (4H,));
    hx: ``(h0, c0)``, each (1, B, H), or None for zeros. Returns ``y, (h_n, c_n)``: y (B, T, H) or
    (T, B, H), h_n and c_n (1, B, H), all float64.
    """
    x = np.asarray(x, np.float64)
    if not batch_first:
        x = x.transpose(1, 0, 2)
    batch, steps, _ = x.shape
    weights = torch_to_seed_weights(
        state_dict["weight_ih_l0"],
        state_dict["weight_hh_l0"],
        state_dict["bias_ih_l0"],
        state_dict["bias_hh_l0"],
    )
    hidden = weights["b_f"].shape[0]
    if hx is None:
        h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    else:
        h, c = (np.asarray(state, np.float64)[0] for state in hx)
    y = np.empty((batch, steps, hidden))
    for t in range(steps):
        h, c = lstm_step(h, c, x[:, t], **weights)
        y[:, t] = h
    if not batch_first:
        y = y.transpose(1, 0, 2)
    return y, (h[None], c[None])
