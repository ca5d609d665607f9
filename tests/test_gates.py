"""The seed's public gate functions against the float64 reference's step, and their errors."""

import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

import lstm_numba as ln
from lstm_numba import reference

DTYPES = [np.float32, np.float64]


def random_step_inputs(rng, batch, inputs, hidden, dtype):
    """h_prev, c_prev (B, H), x (B, I) and per-gate W_* (H, H + I), b_* (H,)."""
    scale = 1 / np.sqrt(hidden)
    arrays = {
        "h_prev": rng.uniform(-1, 1, (batch, hidden)),
        "c_prev": rng.standard_normal((batch, hidden)),
        "x": rng.standard_normal((batch, inputs)),
    }
    for gate in "fico":
        arrays[f"W_{gate}"] = rng.uniform(-scale, scale, (hidden, hidden + inputs))
        arrays[f"b_{gate}"] = rng.uniform(-scale, scale, hidden)
    return {name: value.astype(dtype) for name, value in arrays.items()}


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 9),
    inputs=st.integers(1, 17),
    hidden=st.integers(1, 33),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_each_gate_matches_its_seed_line(batch, inputs, hidden, dtype, seed):
    a = random_step_inputs(np.random.default_rng(seed), batch, inputs, hidden, dtype)
    hx = np.concatenate([a["h_prev"], a["x"]], axis=1).astype(np.float64)

    def preactivation(gate):
        return hx @ a[f"W_{gate}"].T.astype(np.float64) + a[f"b_{gate}"]

    f = ln.forget_gate(a["h_prev"], a["x"], a["W_f"], a["b_f"])
    i = ln.input_gate(a["h_prev"], a["x"], a["W_i"], a["b_i"])
    c_tilde = ln.candidate_memory(a["h_prev"], a["x"], a["W_c"], a["b_c"])
    o = ln.output_gate(a["h_prev"], a["x"], a["W_o"], a["b_o"])
    for actual, expected in [
        (f, expit(preactivation("f"))),
        (i, expit(preactivation("i"))),
        (c_tilde, np.tanh(preactivation("c"))),
        (o, expit(preactivation("o"))),
    ]:
        assert actual.dtype == dtype and actual.shape == (batch, hidden)
        assert_close(actual, expected)

    c = ln.cell_update(f, a["c_prev"], i, c_tilde)
    assert_close(c, f.astype(np.float64) * a["c_prev"] + i.astype(np.float64) * c_tilde)
    h = ln.hidden_state(o, c)
    assert_close(h, o.astype(np.float64) * np.tanh(c.astype(np.float64)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, inputs, hidden", [(1, 1, 1), (3, 5, 7), (16, 32, 64)])
def test_lstm_step_matches_reference(rng, batch, inputs, hidden, dtype):
    a = random_step_inputs(rng, batch, inputs, hidden, dtype)
    h, c = ln.lstm_step(**a)
    h_ref, c_ref = reference.lstm_step(**a)
    assert h.dtype == c.dtype == dtype
    assert_close(h, h_ref)
    assert_close(c, c_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_unbatched_row_is_a_batch_of_one(rng, dtype):
    """h_prev (H,), x (I,), c_prev (H,), as ``torch.nn.LSTMCell`` takes one row: each gate and
    the step give row 0 of the batch of one, shaped (H,)."""
    a = random_step_inputs(rng, 1, 3, 4, dtype)
    row = {name: a[name][0] for name in ("h_prev", "x", "c_prev")}
    h, c = ln.lstm_step(**{**a, **row})
    h_batch, c_batch = ln.lstm_step(**a)
    assert h.shape == c.shape == (4,) and h.dtype == dtype
    np.testing.assert_array_equal(h, h_batch[0])
    np.testing.assert_array_equal(c, c_batch[0])
    h_ref, c_ref = reference.lstm_step(**{**a, **row})  # the oracle takes one row too
    assert h_ref.shape == (4,)
    assert_close(h, h_ref)
    assert_close(c, c_ref)
    f = ln.forget_gate(row["h_prev"], row["x"], a["W_f"], a["b_f"])
    np.testing.assert_array_equal(f, ln.forget_gate(a["h_prev"], a["x"], a["W_f"], a["b_f"])[0])


def test_lstm_step_with_model_gate_weights_matches_model(rng):
    model = ln.LSTM(5, 7, dtype=np.float64, seed=1)
    x = rng.standard_normal((3, 1, 5))
    h0, c0 = rng.standard_normal((2, 1, 3, 7))
    y, (h_n, c_n) = model(x, (h0, c0))
    h, c = ln.lstm_step(h0[0], c0[0], x[:, 0], **model.gate_weights())
    assert_close(h, y[:, 0])
    assert_close(c, c_n[0])


def test_gate_weights_of_each_layer_and_direction(rng):
    """A stack's gate_weights(layer, direction) step the reverse direction of its second layer
    from the first layer's output; a layer or direction the model lacks is named."""
    model = ln.LSTM(3, 4, 2, bidirectional=True, dtype=np.float64, seed=2)
    x = rng.standard_normal((2, 1, 3))
    h0, c0 = rng.standard_normal((2, 4, 2, 4))
    y, (h_n, c_n) = model(x, (h0, c0))
    weights = {name: w for name, w in model.state_dict().items() if "_l0" in name}
    first_layer, _ = ln.from_state_dict(weights)(x, (h0[:2], c0[:2]))  # (B, 1, 2H)
    h, c = ln.lstm_step(h0[3], c0[3], first_layer[:, 0], **model.gate_weights(1, 1))
    assert_close(h, h_n[3])
    assert_close(c, c_n[3])
    with pytest.raises(ValueError, match=r"layer: expected 0 <= layer < num_layers = 2, got 2"):
        model.gate_weights(2)
    with pytest.raises(ValueError, match=r"direction: expected 0 <= direction < directions = 1"):
        ln.LSTM(3, 4).gate_weights(direction=1)


def test_gate_errors_name_the_argument(rng):
    a = random_step_inputs(rng, 2, 3, 4, np.float32)
    with pytest.raises(ValueError, match=r"W_f: expected shape \(H, H \+ I\) = \(4, 7\), got"):
        ln.forget_gate(a["h_prev"], a["x"], a["W_f"][:, :6], a["b_f"])
    with pytest.raises(ValueError, match=r"b_i: expected shape \(H,\) = \(4,\), got \(5,\)"):
        ln.input_gate(a["h_prev"], a["x"], a["W_i"], np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"x: expected a 2-D array \(B, I\) with B = 2"):
        ln.output_gate(a["h_prev"], a["x"][:1], a["W_o"], a["b_o"])
    with pytest.raises(ValueError, match=r"x: expected a 1-D array \(I,\), as h_prev is \(H,\)"):
        ln.candidate_memory(a["h_prev"][0], a["x"], a["W_c"], a["b_c"])
    with pytest.raises(ValueError, match=r"h_prev: expected a 2-D array \(B, H\) or, one row"):
        ln.candidate_memory(a["h_prev"][None], a["x"], a["W_c"], a["b_c"])
    with pytest.raises(TypeError, match=r"mixed dtypes.*W_f: float64"):
        ln.forget_gate(a["h_prev"], a["x"], a["W_f"].astype(np.float64), a["b_f"])
    with pytest.raises(TypeError, match=r"x: expected a float32 or float64 array, got dtype int64"):
        ln.forget_gate(a["h_prev"], np.zeros((2, 3), np.int64), a["W_f"], a["b_f"])
    f = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"c_tilde: expected shape of c_prev = \(2, 4\), got"):
        ln.cell_update(f, f, f, f[:, :3])
    with pytest.raises(ValueError, match=r"o: expected shape of c = \(2, 4\)"):
        ln.hidden_state(f[:1], f)
    step = {**a, "c_prev": a["c_prev"][:, :3]}  # the cell's H, not a gate's, is wrong
    with pytest.raises(ValueError, match=r"c_prev: expected shape \(B, H\) of h_prev = \(2, 4\)"):
        ln.lstm_step(**step)
