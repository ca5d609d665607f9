"""Gate traces (``model(x, return_gates=True)``) against the public gate functions, step by step."""

import numpy as np
import pytest
from conftest import assert_close, threads_at_any_size

import lstm_numba as ln


def recompute_gates(model, x, lengths):
    """Every layer and direction's f, i, C̃, o, C, (L·D, B, T, H) each, with the seed's public
    functions (``ln.forget_gate`` …) one row and one step at a time; NaN past each length."""
    batch, steps = x.shape[:2]
    directions = model.num_directions
    traces = np.full((5, model.num_layers * directions, batch, steps, model.hidden_size), np.nan)
    layer_input = x.astype(np.float64)
    for layer in range(model.num_layers):
        y = np.zeros((batch, steps, directions * model.hidden_size))
        for d in range(directions):
            w = {k: v.astype(np.float64) for k, v in model.gate_weights(layer, d).items()}
            k = layer * directions + d
            for b in range(batch):
                h = c = np.zeros((1, model.hidden_size))
                times = range(lengths[b])
                for t in reversed(times) if d == 1 or model.reverse else times:
                    x_t = layer_input[b : b + 1, t]
                    f = ln.forget_gate(h, x_t, w["W_f"], w["b_f"])
                    i = ln.input_gate(h, x_t, w["W_i"], w["b_i"])
                    c_tilde = ln.candidate_memory(h, x_t, w["W_c"], w["b_c"])
                    c = ln.cell_update(f, c, i, c_tilde)
                    o = ln.output_gate(h, x_t, w["W_o"], w["b_o"])
                    h = ln.hidden_state(o, c)
                    traces[:, k, b, t] = np.concatenate([f, i, c_tilde, o, c])
                    y[b, t, d * model.hidden_size : (d + 1) * model.hidden_size] = h[0]
        layer_input = y
    return traces


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [{}, {"num_layers": 2, "bidirectional": True}, {"reverse": True}],
    ids=["plain", "2-layer-bidirectional", "reverse"],
)
def test_traces_are_the_gates_recomputed_step_by_step(rng, dtype, options):
    model = ln.LSTM(3, 4, **options, dtype=dtype, seed=1)
    # more rows than the units split takes, out of length order: the model runs them in that
    # order and puts the traces back in place
    x = rng.standard_normal((7, 5, 3)).astype(dtype)
    lengths = np.array([5, 2, 0, 4, 5, 1, 3])
    y, _, gates = model(x, lengths=lengths, return_gates=True)
    expected = recompute_gates(model, x, lengths)
    for k, name in enumerate(ln.Gates._fields):
        trace = getattr(gates, name)
        assert trace.shape == (model.num_layers * model.num_directions, 7, 5, 4), name
        assert np.array_equal(np.isnan(trace), np.isnan(expected[k])), f"{name}: NaN pattern"
        valid = ~np.isnan(expected[k])
        assert_close(trace[valid], expected[k][valid], dtype)


@pytest.mark.parametrize(
    "options",
    [
        {"peepholes": True, "clip": 0.8, "bidirectional": True},
        {"input_forget": True, "activations": ("hard_sigmoid", "relu", "tanh")},
        {"proj_size": 2, "num_layers": 2},
    ],
)
def test_traces_satisfy_the_cell_equations(rng, options):
    """For the ONNX cell and projection, which the seed's functions do not cover: the traces obey
    C = f ⊙ C_prev + i ⊙ C̃ step to step, end at c_n, and (without projection) give y = o ⊙ h(C)."""
    model = ln.LSTM(3, 4, **options, dtype=np.float64, seed=2)
    x = rng.standard_normal((2, 6, 3))
    c0 = rng.standard_normal((model.num_layers * model.num_directions, 2, 4))
    h0 = rng.standard_normal((*c0.shape[:2], model.output_size))
    y, (_, c_n), gates = model(x, (h0, c0), return_gates=True)
    for k in range(c0.shape[0]):
        backwards = k % model.num_directions == 1
        order = list(range(6))[::-1] if backwards else list(range(6))
        c_prev = c0[k]
        for t in order:
            f, i, c_tilde = gates.forget[k, :, t], gates.input[k, :, t], gates.candidate[k, :, t]
            assert_close(gates.cell[k, :, t], f * c_prev + i * c_tilde)
            c_prev = gates.cell[k, :, t]
        assert_close(c_n[k], c_prev)
    if "input_forget" in options:
        assert_close(gates.forget, 1 - gates.input)
        assert_close(y, gates.output[0] * np.tanh(gates.cell[0]))  # h is tanh here
        assert (gates.candidate >= 0).all()  # g is relu
    if "peepholes" in options:
        width = model.output_size
        assert_close(y[..., :width], gates.output[0] * np.tanh(gates.cell[0]))
        assert_close(y[..., width:], gates.output[1] * np.tanh(gates.cell[1]))


@pytest.mark.parametrize("threads", [False, True], ids=["calling-thread", "parallel-driver"])
def test_traces_leave_the_forward_unchanged(rng, threads, monkeypatch):
    if threads:
        threads_at_any_size(monkeypatch)
    model = ln.LSTM(3, 4, num_layers=2, bidirectional=True, seed=3)
    x = rng.standard_normal((7, 6, 3)).astype(np.float32)
    lengths = np.array([6, 3, 1, 6, 2, 5, 4])
    y, (h_n, c_n) = model(x, lengths=lengths)
    y_g, (h_g, c_g), gates = model(x, lengths=lengths, return_gates=True)
    np.testing.assert_array_equal(y_g, y)
    np.testing.assert_array_equal(h_g, h_n)
    np.testing.assert_array_equal(c_g, c_n)
    # The last valid step's cell is c_n: step length − 1 forward, step 0 in reverse.
    for row, length in enumerate(lengths):
        np.testing.assert_array_equal(gates.cell[0::2, row, length - 1], c_n[0::2, row])
        np.testing.assert_array_equal(gates.cell[1::2, row, 0], c_n[1::2, row])


def test_unbatched_traces(rng):
    model = ln.LSTM(3, 4, num_layers=2, seed=4)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    _, _, gates = model(x, return_gates=True)
    _, _, batched = model(x[None], return_gates=True)
    assert gates.forget.shape == (2, 5, 4)
    np.testing.assert_array_equal(gates.cell, batched.cell[:, 0])
