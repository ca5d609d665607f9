"""``LSTM`` against other implementations: PyTorch (when installed) and ONNX Runtime."""

import numpy as np
import pytest

import lstm_numba as ln
from lstm_numba.convert import to_onnx

SHAPES = [(1, 1, 1, 1), (1, 50, 7, 13), (5, 12, 16, 32), (17, 33, 9, 64)]  # (B, T, I, H)


def model_input_states(rng, shape, batch_first=True):
    batch, steps, inputs, hidden = shape
    model = ln.LSTM(inputs, hidden, batch_first=batch_first, seed=rng.integers(2**32))
    x_shape = (batch, steps, inputs) if batch_first else (steps, batch, inputs)
    x = rng.standard_normal(x_shape).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 1, batch, hidden)).astype(np.float32)
    return model, x, h0, c0


def assert_float32_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch_first", [True, False])
def test_matches_torch(rng, shape, batch_first):
    torch = pytest.importorskip("torch")
    model, x, h0, c0 = model_input_states(rng, shape, batch_first)
    torch_lstm = torch.nn.LSTM(model.input_size, model.hidden_size, batch_first=batch_first)
    torch_lstm.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    with torch.no_grad():
        states = (torch.from_numpy(h0), torch.from_numpy(c0))
        y_t, (h_t, c_t) = torch_lstm(torch.from_numpy(x), states)
    y, (h_n, c_n) = model(x, (h0, c0))
    assert_float32_close(y, y_t.numpy())
    assert_float32_close(h_n, h_t.numpy())
    assert_float32_close(c_n, c_t.numpy())


def test_torch_weights_drop_in(rng):
    torch = pytest.importorskip("torch")
    torch_lstm = torch.nn.LSTM(6, 10, batch_first=True)
    model = ln.LSTM(6, 10)
    model.load_state_dict({k: v.numpy() for k, v in torch_lstm.state_dict().items()})
    x = rng.standard_normal((4, 9, 6)).astype(np.float32)
    with torch.no_grad():
        expected = torch_lstm(torch.from_numpy(x))[0].numpy()
    assert_float32_close(model(x)[0], expected)


def onnx_lstm_session(model):
    """An ONNX Runtime session of ``model`` exported with ``to_onnx``."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    onnx_model = to_onnx(model)
    onnx.checker.check_model(onnx_model)
    return ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_onnx_runtime(rng, shape, batch_first):
    """Time-major, the graph's Y is the node's (T, D, B, H); batch-first, x and y as the
    model's, (B, T, I) and (B, T, H), as torch exports ``batch_first=True``."""
    model, x, h0, c0 = model_input_states(rng, shape, batch_first)
    session = onnx_lstm_session(model)
    y_o, h_o, c_o = session.run(None, {"X": x, "initial_h": h0, "initial_c": c0})
    y, (h_n, c_n) = model(x, (h0, c0))
    assert_float32_close(y, y_o if batch_first else y_o[:, 0])
    assert_float32_close(h_n, h_o)
    assert_float32_close(c_n, c_o)
