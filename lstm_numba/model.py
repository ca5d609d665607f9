"""The model API: ``LSTM``, a PyTorch-compatible LSTM layer for inference."""

import math

import numpy as np

from lstm_numba import cpu
from lstm_numba._validation import (
    as_float_array,
    check_dtype,
    check_positive_int,
    check_shape,
)

GATE_ORDER = "ifgo"
"""Order of the four gate blocks in the stacked weights, as in PyTorch: input, forget, candidate
(g, the seed's C̃), output."""


class LSTM:
    """A one-layer LSTM with ``torch.nn.LSTM``'s weights, shapes and results, on Numba kernels.

    ``LSTM(input_size, hidden_size, *, batch_first=True, dtype=np.float32, seed=None)``.
    Weights start uniform in ±1/√H, as in PyTorch (``seed`` makes them reproducible), and are plain
    NumPy arrays under PyTorch's names: ``model.weight_ih_l0`` (4H, I), ``model.weight_hh_l0``
    (4H, H), ``model.bias_ih_l0`` and ``model.bias_hh_l0`` (4H,), gate blocks in order i, f, g, o.

    ``y, (h_n, c_n) = model(x, hx=None)``: x is (B, T, I) when ``batch_first`` else (T, B, I), or
    (T, I) for one unbatched sequence; ``hx = (h0, c0)``, each (1, B, H) ((1, H) unbatched), zeros
    when omitted. y is (B, T, H) or (T, B, H); h_n and c_n are (1, B, H), the states after the
    last step.
    """

    def __init__(self, input_size, hidden_size, *, batch_first=True, dtype=np.float32, seed=None):
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.batch_first = bool(batch_first)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.hidden_size)
        self._parameters = {
            name: rng.uniform(-bound, bound, shape).astype(self.dtype)
            for name, (shape, _) in self._parameter_shapes().items()
        }

    def _parameter_shapes(self):
        """Name → (shape, axes spelled out) of every weight, PyTorch's names and layouts."""
        gates, inputs, hidden = 4 * self.hidden_size, self.input_size, self.hidden_size
        return {
            "weight_ih_l0": ((gates, inputs), "(4H, I)"),
            "weight_hh_l0": ((gates, hidden), "(4H, H)"),
            "bias_ih_l0": ((gates,), "(4H,)"),
            "bias_hh_l0": ((gates,), "(4H,)"),
        }

    def _checked_parameter(self, name, value):
        """``value`` as a C-contiguous array of the model's dtype and ``name``'s shape (floats cast,
        as PyTorch's ``load_state_dict`` does)."""
        shape, meaning = self._parameter_shapes()[name]
        array = as_float_array(name, value)
        check_shape(name, array, shape, meaning)
        return np.array(array, dtype=self.dtype, order="C")

    def __getattr__(self, name):
        parameters = self.__dict__.get("_parameters", {})
        if name in parameters:
            return parameters[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self.__dict__.get("_parameters", {}):
            self._parameters[name] = self._checked_parameter(name, value)
        else:
            super().__setattr__(name, value)

    def __repr__(self):
        return (
            f"LSTM({self.input_size}, {self.hidden_size}, batch_first={self.batch_first}, "
            f"dtype={self.dtype.name})"
        )

    def state_dict(self):
        """Copies of the weights under PyTorch's names: ``torch.nn.LSTM.load_state_dict`` takes them
        after ``torch.from_numpy``."""
        return {name: value.copy() for name, value in self._parameters.items()}

    def load_state_dict(self, state_dict):
        """Replace every weight from a mapping with PyTorch's names and layouts, e.g.
        ``{k: v.numpy() for k, v in torch_lstm.state_dict().items()}``.

        Checks every key and shape first and reports all problems in one ``ValueError``; on error
        the model is unchanged.
        """
        shapes = self._parameter_shapes()
        problems = [f"missing key {name!r}" for name in shapes if name not in state_dict]
        problems += [f"unexpected key {name!r}" for name in state_dict if name not in shapes]
        loaded = {}
        for name in shapes.keys() & state_dict.keys():
            try:
                loaded[name] = self._checked_parameter(name, state_dict[name])
            except (TypeError, ValueError) as error:
                problems.append(str(error))
        if problems:
            raise ValueError("load_state_dict: " + "; ".join(sorted(problems)))
        self._parameters.update(loaded)

    def gate_weights(self):
        """The weights in the seed's form for ``lstm_numba.lstm_step``: per gate ``W_*`` (H, H + I)
        acting on ``[h, x]`` and ``b_*`` (H,) = b_ih + b_hh, for gates f, i, c (C̃) and o."""
        hidden = self.hidden_size
        bias = self.bias_ih_l0 + self.bias_hh_l0
        weights = {}
        for block, gate in enumerate(GATE_ORDER):
            rows = slice(block * hidden, (block + 1) * hidden)
            seed_name = "c" if gate == "g" else gate
            weights[f"W_{seed_name}"] = np.concatenate(
                [self.weight_hh_l0[rows], self.weight_ih_l0[rows]], axis=1
            )
            weights[f"b_{seed_name}"] = bias[rows]
        return weights

    def __call__(self, x, hx=None):
        x = as_float_array("x", x, self.dtype)
        if x.ndim not in (2, 3):
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(
                f"x: expected a 3-D array {layout} or a 2-D (T, I), got shape {x.shape}"
            )
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None] if self.batch_first else x[:, None]
        batch, steps = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"x: expected input size I = {self.input_size} on the last axis, got {x.shape}"
            )
        if steps == 0:
            raise ValueError(f"x: expected at least one time step, got shape {x.shape}")

        state_shape = (1, batch, self.hidden_size)
        h_n = np.zeros(state_shape, self.dtype)
        c_n = np.zeros(state_shape, self.dtype)
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("hx: expected a pair (h0, c0)")
            for name, given, state in (("h0", hx[0], h_n), ("c0", hx[1], c_n)):
                given = as_float_array(name, given, self.dtype)
                expected = state_shape[::2] if unbatched else state_shape
                check_shape(name, given, expected, "(1, H)" if unbatched else "(1, B, H)")
                state[...] = given.reshape(state_shape)

        y_shape = (
            (batch, steps, self.hidden_size)
            if self.batch_first
            else (steps, batch, self.hidden_size)
        )
        y = np.empty(y_shape, self.dtype)
        if batch > 0:
            cpu.lstm_layer_forward(
                np.ascontiguousarray(x),
                self.weight_ih_l0,
                self.weight_hh_l0,
                self.bias_ih_l0 + self.bias_hh_l0,
                h_n[0],
                c_n[0],
                y,
                self.batch_first,
            )
        if unbatched:
            y = y[0] if self.batch_first else y[:, 0]
            h_n, c_n = h_n[:, 0], c_n[:, 0]
        return y, (h_n, c_n)
