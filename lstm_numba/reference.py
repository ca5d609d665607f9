"""A plain float64 NumPy LSTM, written for clarity: the oracle the tests compare against.

It shares no code with the kernels: its activations are SciPy's ``expit``, NumPy's ``tanh`` and
ONNX's definitions written in NumPy, its loops are Python loops over rows and steps. Inputs of
any float dtype are computed in float64.
"""

import numpy as np
from scipy.special import expit as sigmoid


def lstm_step(h_prev, c_prev, x, W_f, b_f, W_i, b_i, W_c, b_c, W_o, b_o):
    """The seed, line by line. h_prev, c_prev (B, H); x (B, I) (or (H,), (H,), (I,): one row);
    W_* (H, H + I); b_* (H,).

    Returns ``(h, c)``, each shaped as h_prev, float64.
    """
    hx = np.concatenate([h_prev, x], axis=-1).astype(np.float64)
    f = sigmoid(hx @ np.asarray(W_f, np.float64).T + b_f)
    i = sigmoid(hx @ np.asarray(W_i, np.float64).T + b_i)
    c_tilde = np.tanh(hx @ np.asarray(W_c, np.float64).T + b_c)
    c = f * c_prev + i * c_tilde
    o = sigmoid(hx @ np.asarray(W_o, np.float64).T + b_o)
    h = o * np.tanh(c)
    return h, c


ACTIVATIONS = {
    "sigmoid": lambda x, alpha, beta: sigmoid(x),
    "tanh": lambda x, alpha, beta: np.tanh(x),
    "relu": lambda x, alpha, beta: np.maximum(x, 0.0),
    "hardsigmoid": lambda x, alpha, beta: np.clip(alpha * x + beta, 0.0, 1.0),
    "leakyrelu": lambda x, alpha, beta: np.where(x >= 0, x, alpha * x),
    "thresholdedrelu": lambda x, alpha, beta: np.where(x > alpha, x, 0.0),
    "scaledtanh": lambda x, alpha, beta: alpha * np.tanh(beta * x),
    "affine": lambda x, alpha, beta: alpha * x + beta,
    "elu": lambda x, alpha, beta: np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
    "softsign": lambda x, alpha, beta: x / (1.0 + np.abs(x)),
    "softplus": lambda x, alpha, beta: np.logaddexp(0.0, x),
}
"""ONNX's activation functions by name, as the operator's specification defines them."""

STANDARD_ACTIVATIONS = (("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0), ("tanh", 0.0, 0.0))


def lstm_forward(
    x,
    state_dict,
    hx=None,
    batch_first=True,
    *,
    lengths=None,
    reverse=False,
    clip=None,
    input_forget=False,
    activations=STANDARD_ACTIVATIONS,
):
    """A multi-layer, optionally bidirectional LSTM, PyTorch's conventions plus ONNX's options.

    x: (B, T, I) if ``batch_first`` else (T, B, I). ``state_dict``: PyTorch's names and layouts
    (``weight_ih_l{k}[_reverse]`` (4H, ·), ``weight_hh_l{k}`` (4H, H_out), optional
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (H_out, H)) and optionally
    ``peephole_l{k}`` (3H,) in ONNX's order i, o, f; the layers, directions, projection and
    peepholes are read off the keys. hx: ``(h0, c0)``, each (D·L, B, ·), or None for zeros.
    lengths: (B,) valid steps per sequence, or None. reverse: a unidirectional LSTM reads
    backwards (ONNX's direction="reverse"). clip, input_forget: as ONNX. activations:
    (name, alpha, beta) for ONNX's f, g, h; 3 of them, or 3 per direction.

    Returns ``y, (h_n, c_n)`` as ``torch.nn.LSTM``, float64, y zero past each length.
    """
    x = np.asarray(x, np.float64)
    if not batch_first:
        x = x.transpose(1, 0, 2)
    batch, steps, _ = x.shape
    weights = {name: np.asarray(value, np.float64) for name, value in state_dict.items()}
    layers = sum(name.startswith("weight_ih_l") and "reverse" not in name for name in weights)
    suffixes = ["", "_reverse"] if "weight_ih_l0_reverse" in weights else [""]
    hidden = weights["weight_hh_l0"].shape[0] // 4
    out = weights["weight_hh_l0"].shape[1]
    if len(activations) == 3:
        activations = list(activations) * len(suffixes)
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    states = len(suffixes) * layers
    if hx is None:
        h0, c0 = np.zeros((states, batch, out)), np.zeros((states, batch, hidden))
    else:
        h0, c0 = (np.asarray(state, np.float64) for state in hx)
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    layer_input = x
    for layer in range(layers):
        y = np.zeros((batch, steps, len(suffixes) * out))
        for direction, suffix in enumerate(suffixes):
            k = layer * len(suffixes) + direction
            weight = {
                name: weights.get(f"{name}_l{layer}{suffix}")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
            }
            bias = np.zeros(4 * hidden)
            if weight["bias_ih"] is not None:
                bias = weight["bias_ih"] + weight["bias_hh"]
            peephole = weights.get(f"peephole_l{layer}{suffix}", np.zeros(3 * hidden))
            p_i, p_o, p_f = np.split(peephole, 3)
            (f_act, *f_args), (g_act, *g_args), (h_act, *h_args) = activations[
                3 * direction : 3 * direction + 3
            ]
            f_act, g_act, h_act = ACTIVATIONS[f_act], ACTIVATIONS[g_act], ACTIVATIONS[h_act]
            bound = np.inf if clip is None else clip
            for b in range(batch):
                h, c = h0[k, b], c0[k, b]
                times = range(lengths[b])
                for t in reversed(times) if suffix or reverse else times:
                    z = weight["weight_ih"] @ layer_input[b, t] + weight["weight_hh"] @ h + bias
                    z_i, z_f, z_g, z_o = np.split(z, 4)
                    i = f_act(np.clip(z_i + p_i * c, -bound, bound), *f_args)
                    if input_forget:
                        f = 1.0 - i
                    else:
                        f = f_act(np.clip(z_f + p_f * c, -bound, bound), *f_args)
                    c = f * c + i * g_act(np.clip(z_g, -bound, bound), *g_args)
                    o = f_act(np.clip(z_o + p_o * c, -bound, bound), *f_args)
                    h = o * h_act(c, *h_args)
                    if weight["weight_hr"] is not None:
                        h = weight["weight_hr"] @ h
                    y[b, t, direction * out : (direction + 1) * out] = h
                h_n[k, b], c_n[k, b] = h, c
        layer_input = y
    if not batch_first:
        y = y.transpose(1, 0, 2)
    return y, (h_n, c_n)


def model_forward(model, x, hx=None, lengths=None):
    """What ``model(x, hx, lengths=lengths)`` computes (``model`` an ``lstm_numba.LSTM``, batched
    ``x``), by ``lstm_forward`` with every option of the model: float64."""
    activations = zip(model.activations, model.activation_alpha, model.activation_beta, strict=True)
    return lstm_forward(
        x,
        model.state_dict(),
        hx,
        model.batch_first,
        lengths=lengths,
        reverse=model.reverse,
        clip=model.clip,
        input_forget=model.input_forget,
        activations=tuple(activations),
    )
