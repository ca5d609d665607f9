"""Weight import and export between ``LSTM`` and other formats.

Layouts (cited from each project's operator definition):

- PyTorch ``nn.LSTM`` (``torch/nn/modules/rnn.py``): ``weight_ih_l{k}`` (4H, I), ``weight_hh_l{k}``
  (4H, H_out), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (H_out, H), suffix
  ``_reverse`` for the reverse direction, gate blocks i, f, g, o. ``LSTM`` stores exactly this, so
  ``state_dict``/``load_state_dict`` are the PyTorch converters.
- ONNX ``LSTM`` (``onnx/defs/rnn/defs.cc``): ``W`` [D, 4H, I], ``R`` [D, 4H, H], ``B`` [D, 8H] =
  [Wb, Rb], gate blocks i, o, f, c; ``P`` [D, 3H] in i, o, f (``LSTM`` keeps this order in
  ``peephole_l{k}``).
"""

import numpy as np

TORCH_TO_ONNX_GATES = [0, 3, 1, 2]
"""Gate blocks of PyTorch's order (i, f, g, o) taken in ONNX's order (i, o, f, c)."""

ONNX_ACTIVATION_NAMES = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "hardsigmoid": "HardSigmoid",
    "leakyrelu": "LeakyRelu",
    "thresholdedrelu": "ThresholdedRelu",
    "scaledtanh": "ScaledTanh",
    "affine": "Affine",
    "elu": "Elu",
    "softsign": "Softsign",
    "softplus": "Softplus",
}
"""``LSTM.activations`` names → the ONNX attribute's spelling."""


def _onnx_gate_order(stacked, hidden):
    """(D, 4H, …) in PyTorch gate order → (D, 4H, …) in ONNX gate order."""
    blocks = stacked.reshape(stacked.shape[0], 4, hidden, *stacked.shape[2:])
    return np.ascontiguousarray(blocks[:, TORCH_TO_ONNX_GATES].reshape(stacked.shape))


def _activation_attributes(model):
    """ONNX's ``activations``, ``activation_alpha`` and ``activation_beta`` for ``model``."""
    from lstm_numba.model import ACTIVATION_PARAMETERS

    names, alphas, betas = [], [], []
    for name, alpha, beta in zip(
        model.activations, model.activation_alpha, model.activation_beta, strict=True
    ):
        names.append(ONNX_ACTIVATION_NAMES[name])
        takes_alpha, takes_beta = ACTIVATION_PARAMETERS.get(name, (None, None))
        if takes_alpha is not None:
            alphas.append(alpha)
        if takes_beta is not None:
            betas.append(beta)
    return names, alphas, betas


def to_onnx(model, opset=14, *, sequence_lens=False):
    """An ONNX ``ModelProto`` computing ``model``: one ``LSTM`` node per layer (needs ``onnx``).

    Inputs: ``X`` [T, B, I] (ONNX layout 0, time-major, whatever ``model.batch_first``),
    ``initial_h`` [D·L, B, H] and ``initial_c`` [D·L, B, H] (PyTorch's h0/c0), and, with
    ``sequence_lens=True``, ``sequence_lens`` [B] int32. Outputs: ``Y`` [T, D, B, H] of the last
    layer, ``Y_h`` and ``Y_c`` [D·L, B, H] (PyTorch's h_n/c_n). Layers are chained by a Transpose
    and a Reshape of Y to [T, B, D·H]. The weights are initializers. ONNX has no projection, so a
    model with ``proj_size > 0`` raises ``ValueError``.
    """
    from onnx import TensorProto, helper, numpy_helper

    if model.proj_size:
        raise ValueError("to_onnx: the ONNX LSTM operator has no projection (proj_size > 0)")
    hidden, directions = model.hidden_size, model.num_directions
    element = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}[model.dtype.type]
    activations, alphas, betas = _activation_attributes(model)
    attributes = {
        "hidden_size": hidden,
        "direction": (
            "bidirectional" if model.bidirectional else "reverse" if model.reverse else "forward"
        ),
        "activations": activations,
        "input_forget": int(model.input_forget),
    }
    if alphas:
        attributes["activation_alpha"] = alphas
    if betas:
        attributes["activation_beta"] = betas
    if model.clip is not None:
        attributes["clip"] = model.clip

    initializers, nodes = [], []

    def constant(name, array):
        initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    layer_input = "X"
    hidden_outputs, cell_outputs = [], []
    for layer, stacks in enumerate(model._layers):
        suffix = f"_l{layer}"
        inputs = [
            constant("W" + suffix, _onnx_gate_order(stacks["weight_ih"], hidden)),
            constant("R" + suffix, _onnx_gate_order(stacks["weight_hh"], hidden)),
            constant(
                "B" + suffix,
                np.concatenate(
                    [
                        _onnx_gate_order(stacks["bias_ih"], hidden),
                        _onnx_gate_order(stacks["bias_hh"], hidden),
                    ],
                    axis=1,
                ),
            ),
        ]
        states = []
        for name in ("initial_h", "initial_c"):
            if model.num_layers == 1:
                states.append(name)
                continue
            starts = constant(f"{name}_start{suffix}", np.array([layer * directions]))
            ends = constant(f"{name}_end{suffix}", np.array([(layer + 1) * directions]))
            nodes.append(helper.make_node("Slice", [name, starts, ends], [name + suffix]))
            states.append(name + suffix)
        peepholes = constant("P" + suffix, stacks["peephole"]) if model.peepholes else ""
        lengths = "sequence_lens" if sequence_lens else ""
        last = layer == model.num_layers - 1
        outputs = ["Y" if last else "Y" + suffix, "Y_h" + suffix, "Y_c" + suffix]
        nodes.append(
            helper.make_node(
                "LSTM",
                [layer_input, *inputs, lengths, *states, peepholes],
                outputs,
                name="LSTM" + suffix,
                **attributes,
            )
        )
        hidden_outputs.append(outputs[1])
        cell_outputs.append(outputs[2])
        if not last:  # Y [T, D, B, H] → [T, B, D·H]
            nodes.append(
                helper.make_node("Transpose", [outputs[0]], ["Yt" + suffix], perm=[0, 2, 1, 3])
            )
            shape = constant("shape" + suffix, np.array([0, 0, directions * hidden]))
            layer_input = "X" + f"_l{layer + 1}"
            nodes.append(helper.make_node("Reshape", ["Yt" + suffix, shape], [layer_input]))
    for name, parts in (("Y_h", hidden_outputs), ("Y_c", cell_outputs)):
        nodes.append(helper.make_node("Concat", parts, [name], axis=0))

    value = helper.make_tensor_value_info
    state = [directions * model.num_layers, "B", hidden]
    graph_inputs = [
        value("X", element, ["T", "B", model.input_size]),
        value("initial_h", element, state),
        value("initial_c", element, state),
    ]
    if sequence_lens:
        graph_inputs.append(value("sequence_lens", TensorProto.INT32, ["B"]))
    graph = helper.make_graph(
        nodes,
        "lstm_numba",
        graph_inputs,
        [
            value("Y", element, ["T", directions, "B", hidden]),
            value("Y_h", element, state),
            value("Y_c", element, state),
        ],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
