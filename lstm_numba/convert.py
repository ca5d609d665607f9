"""Weight import and export between ``LSTM`` and other formats.

Layouts (cited from each project's operator definition):

- PyTorch ``nn.LSTM`` (``torch/nn/modules/rnn.py``): ``weight_ih_l0`` (4H, I), ``weight_hh_l0``
  (4H, H), ``bias_ih_l0`` and ``bias_hh_l0`` (4H,), gate blocks i, f, g, o. ``LSTM`` stores exactly
  this, so ``state_dict``/``load_state_dict`` are the PyTorch converters.
- ONNX ``LSTM`` (``onnx/defs/rnn/defs.cc``): ``W`` [D, 4H, I], ``R`` [D, 4H, H], ``B`` [D, 8H] =
  [Wb, Rb], gate blocks i, o, f, c.
"""

import numpy as np

TORCH_TO_ONNX_GATES = [0, 3, 1, 2]
"""Gate blocks of PyTorch's order (i, f, g, o) taken in ONNX's order (i, o, f, c)."""


def _onnx_gate_order(stacked, hidden):
    """(4H, …) in PyTorch gate order → (1, 4H, …) in ONNX gate order."""
    blocks = stacked.reshape(4, hidden, *stacked.shape[1:])
    return blocks[TORCH_TO_ONNX_GATES].reshape(stacked.shape)[None]


def to_onnx(model, opset=14):
    """An ONNX ``ModelProto``: one ``LSTM`` node computing ``model`` (needs the ``onnx`` package).

    Inputs ``X`` [T, B, I] (ONNX layout 0, time-major), ``initial_h`` and ``initial_c`` [1, B, H];
    outputs ``Y`` [T, 1, B, H], ``Y_h`` and ``Y_c`` [1, B, H]. The weights are initializers.
    """
    from onnx import TensorProto, helper, numpy_helper

    hidden = model.hidden_size
    element = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}[model.dtype.type]
    weights = {
        "W": _onnx_gate_order(model.weight_ih_l0, hidden),
        "R": _onnx_gate_order(model.weight_hh_l0, hidden),
        "B": np.concatenate(
            [
                _onnx_gate_order(model.bias_ih_l0, hidden),
                _onnx_gate_order(model.bias_hh_l0, hidden),
            ],
            axis=1,
        ),
    }
    node = helper.make_node(
        "LSTM",
        ["X", "W", "R", "B", "", "initial_h", "initial_c"],
        ["Y", "Y_h", "Y_c"],
        hidden_size=hidden,
    )
    value = helper.make_tensor_value_info
    state = [1, "B", hidden]
    graph = helper.make_graph(
        [node],
        "lstm_numba",
        [
            value("X", element, ["T", "B", model.input_size]),
            value("initial_h", element, state),
            value("initial_c", element, state),
        ],
        [
            value("Y", element, ["T", 1, "B", hidden]),
            value("Y_h", element, state),
            value("Y_c", element, state),
        ],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
