"""Weight import and export between ``LSTM`` and other formats: PyTorch, Keras, ONNX.

Layouts (cited from each project's operator definition):

- PyTorch ``nn.LSTM`` (``torch/nn/modules/rnn.py``): ``weight_ih_l{k}`` (4H, I), ``weight_hh_l{k}``
  (4H, H_out), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (H_out, H), suffix
  ``_reverse`` for the reverse direction, gate blocks i, f, g, o. ``LSTM`` stores exactly this, so
  ``state_dict``/``load_state_dict`` are the PyTorch converters.
- ONNX ``LSTM`` (``onnx/defs/rnn/defs.cc``): ``W`` [D, 4H, I], ``R`` [D, 4H, H], ``B`` [D, 8H] =
  [Wb, Rb], gate blocks i, o, f, c; ``P`` [D, 3H] in i, o, f (``LSTM`` keeps this order in
  ``peephole_l{k}``).
- Keras ``LSTM`` (``keras/src/layers/rnn/lstm.py``): ``kernel`` (I, 4H), ``recurrent_kernel``
  (H, 4H), one ``bias`` (4H,), gate blocks i, f, c, o; ``recurrent_activation`` for the gates,
  ``activation`` for the candidate and the output; ``go_backwards`` reads backwards;
  ``Bidirectional`` concatenates a forward and a ``go_backwards`` layer.
"""

import os
import warnings

import numpy as np

from lstm_numba._validation import as_weight_array, check_dtype, import_optional
from lstm_numba.model import DEFAULT_ACTIVATIONS, LSTM, PARAMETER_NAME
from lstm_numba.storage import CONFIG_KEY

TORCH_TO_ONNX_GATES = [0, 3, 1, 2]
"""Gate blocks of PyTorch's order (i, f, g, o) taken in ONNX's order (i, o, f, c)."""
ONNX_TO_TORCH_GATES = [0, 2, 3, 1]
"""Gate blocks of ONNX's order (i, o, f, c) taken in PyTorch's order (i, f, g, o)."""

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


def _onnx_gate_order(stacked, hidden, order=TORCH_TO_ONNX_GATES):
    """(D, 4H, …) with gate blocks reordered: PyTorch's order → ONNX's, or ``order``."""
    blocks = stacked.reshape(stacked.shape[0], 4, hidden, *stacked.shape[2:])
    return np.ascontiguousarray(blocks[:, order].reshape(stacked.shape))


ONNX_MIN_OPSET = 7
"""The first opset of the ``LSTM`` operator as ``to_onnx`` writes it (LSTM-7)."""
ONNX_MIN_STACK_OPSET = 10
"""A stack of layers slices ``initial_h``/``initial_c`` by inputs (Slice-10)."""


def to_onnx(model, opset=14, *, sequence_lens=False, initial_states=True, batch_first=None):
    """An ONNX ``ModelProto`` computing ``model``: one ``LSTM`` node per layer (needs ``onnx``).
    Write it with ``onnx.save(to_onnx(model), path)``.

    Time-major (``batch_first=False``; None: ``model.batch_first``), the nodes' own inputs and
    outputs (ONNX layout 0): ``X`` [T, B, I] and ``Y`` [T, D, B, H] of the last layer.
    Batch-first, as ``torch.onnx.export`` writes ``nn.LSTM(batch_first=True)``: ``X`` [B, T, I],
    transposed before the first node, and ``Y`` [B, T, D·H], the model's y. With
    ``initial_states`` (the default), inputs ``initial_h`` [D·L, B, H] and ``initial_c``
    [D·L, B, H] (PyTorch's h0/c0; without, the states start at zero); with
    ``sequence_lens=True``, ``sequence_lens`` [B] int32. Outputs ``Y_h`` and ``Y_c``
    [D·L, B, H] (PyTorch's h_n/c_n). Layers are chained by a Transpose and a Reshape of Y to
    [T, B, D·H]. The weights are initializers. ONNX has no projection, so a model with
    ``proj_size > 0`` raises ``ValueError``.
    """
    if model.proj_size:
        raise ValueError("to_onnx: the ONNX LSTM operator has no projection (proj_size > 0)")
    import_optional("onnx", "onnx")
    from onnx import TensorProto, defs, helper, numpy_helper

    opset = _check_opset(opset, model.num_layers, defs.onnx_opset_version())

    hidden, directions = model.hidden_size, model.num_directions
    element = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}[model.dtype.type]
    config = model.config
    activations = [ONNX_ACTIVATION_NAMES[name] for name in config["activations"]]
    alphas, betas = config["activation_alpha"], config["activation_beta"]
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

    def sequence_of_rows(y, name):  # Y [T, D, B, H] → [T, B, D·H]
        nodes.append(helper.make_node("Transpose", [y], [y + "_t"], perm=[0, 2, 1, 3]))
        shape = constant(y + "_shape", np.array([0, 0, directions * hidden]))
        nodes.append(helper.make_node("Reshape", [y + "_t", shape], [name]))

    batch_first = model.batch_first if batch_first is None else bool(batch_first)
    layer_input = "X"
    if batch_first:  # [B, T, I] → the nodes' [T, B, I]
        layer_input = "X_time_major"
        nodes.append(helper.make_node("Transpose", ["X"], [layer_input], perm=[1, 0, 2]))
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
        states = ["", ""]  # no initial_h, initial_c: the node starts from zeros
        if initial_states:
            states = ["initial_h", "initial_c"]
        if initial_states and model.num_layers > 1:  # this layer's rows of the graph's states
            starts = constant("state_start" + suffix, np.array([layer * directions]))
            ends = constant("state_end" + suffix, np.array([(layer + 1) * directions]))
            for name in ("initial_h", "initial_c"):
                nodes.append(helper.make_node("Slice", [name, starts, ends], [name + suffix]))
            states = ["initial_h" + suffix, "initial_c" + suffix]
        peepholes = constant("P" + suffix, stacks["peephole"]) if model.peepholes else ""
        lengths = "sequence_lens" if sequence_lens else ""
        last = layer == model.num_layers - 1
        y = "Y" if last and not batch_first else "Y" + suffix  # the graph's Y, or a step to it
        outputs = [y, "Y_h" + suffix, "Y_c" + suffix]
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
        if not last:
            layer_input = f"X_l{layer + 1}"
            sequence_of_rows(outputs[0], layer_input)
        elif batch_first:  # Y [T, D, B, H] → y [B, T, D·H]
            sequence_of_rows(outputs[0], "y_time_major")
            nodes.append(helper.make_node("Transpose", ["y_time_major"], ["Y"], perm=[1, 0, 2]))
    for name, parts in (("Y_h", hidden_outputs), ("Y_c", cell_outputs)):
        nodes.append(helper.make_node("Concat", parts, [name], axis=0))

    value = helper.make_tensor_value_info
    state = [directions * model.num_layers, "B", hidden]
    rows_steps = ["B", "T"] if batch_first else ["T", "B"]
    graph_inputs = [value("X", element, [*rows_steps, model.input_size])]
    if initial_states:
        graph_inputs += [value("initial_h", element, state), value("initial_c", element, state)]
    if sequence_lens:
        graph_inputs.append(value("sequence_lens", TensorProto.INT32, ["B"]))
    graph = helper.make_graph(
        nodes,
        "lstm_numba",
        graph_inputs,
        [
            value("Y", element, [*rows_steps, directions * hidden])
            if batch_first
            else value("Y", element, ["T", directions, "B", hidden]),
            value("Y_h", element, state),
            value("Y_c", element, state),
        ],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check_opset(opset, num_layers, newest):
    """``opset`` as an int the model can be written in, up to ``newest`` (the installed onnx's);
    else a ``TypeError``/``ValueError`` naming ``opset`` (a path there is the likely mistake)."""
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        hint = (
            "; to write a file: onnx.save(to_onnx(model), path)"
            if isinstance(opset, (str, os.PathLike))
            else ""
        )
        raise TypeError(f"opset: expected an integer opset version, got {opset!r}{hint}")
    oldest, why = (
        (ONNX_MIN_STACK_OPSET, f"a stack of {num_layers} layers slices its states (Slice-10)")
        if num_layers > 1
        else (ONNX_MIN_OPSET, "the LSTM operator as written here is LSTM-7")
    )
    if not oldest <= opset <= newest:
        raise ValueError(
            f"opset: expected {oldest} <= opset <= {newest} ({why}; {newest} is the newest "
            f"the installed onnx knows), got {opset}"
        )
    return int(opset)


# --- Import ---------------------------------------------------------------------------------------


READ_OFF_THE_WEIGHTS = {
    "input_size", "hidden_size", "num_layers", "bias", "bidirectional", "proj_size", "peepholes",
    "seed",
}  # fmt: skip
"""``LSTM``'s arguments that ``from_state_dict`` reads off the weights (or, ``seed``, replaces)."""


def from_state_dict(state_dict, *, batch_first=True, dtype=None, **options):
    """An ``LSTM`` from weights under PyTorch's names, e.g. ``np.load("w.npz")`` or
    ``torch_lstm.state_dict()`` (torch tensors as ``from_torch`` reads them). Layout as
    ``torch/nn/modules/rnn.py``: ``weight_ih_l{k}[_reverse]`` (4H, I), ``weight_hh_l{k}``
    (4H, H_out), ``bias_ih_l{k}``/``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (H_out, H), gates
    i, f, g, o; plus ``peephole_l{k}`` (3H,) in ONNX's i, o, f.

    The structure is read off the names and shapes: input_size, hidden_size, num_layers,
    bidirectional (``_reverse`` keys), bias (``bias_*`` keys), proj_size (``weight_hr_l0``) and
    peepholes (``peephole_l0``). ``dtype``: the weights' unless given (float32 for half-precision
    weights, as ``from_torch`` and ``from_onnx`` do).
    ``options``: ``LSTM``'s other keyword arguments (``clip``, ``activations``, ``reverse``, …).
    Every key and shape is checked; all problems are reported in one ``ValueError``.
    """
    read_off = sorted(options.keys() & READ_OFF_THE_WEIGHTS)
    if read_off:
        raise TypeError(
            f"from_state_dict: not arguments here: {', '.join(read_off)} (the weights' names "
            "and shapes give the structure, and their values replace any seed's)"
        )
    arrays = {str(name): as_weight_array(str(name), value) for name, value in state_dict.items()}
    unknown = sorted(name for name in arrays if not PARAMETER_NAME.fullmatch(name))
    if unknown:
        prefix = os.path.commonprefix(unknown).rpartition(".")[0] + "."
        stripped = [name.removeprefix(prefix) for name in unknown]
        hint = ""
        every_key = len(unknown) == len(arrays) and prefix != "."
        if every_key and all(PARAMETER_NAME.fullmatch(name) for name in stripped):
            hint = (
                f"; every key starts with {prefix!r} (a module's name): pass "
                f"{{k.removeprefix({prefix!r}): v for k, v in state_dict.items()}}"
            )
        elif CONFIG_KEY in unknown:
            hint = f"; {CONFIG_KEY} is LSTM.save's: read such a file with lstm_numba.load"
        raise ValueError(
            f"state_dict: unexpected keys {unknown}; expected PyTorch's LSTM names "
            f"(weight_ih_l0, weight_hh_l0, bias_ih_l0, …){hint}"
        )
    for name in ("weight_ih_l0", "weight_hh_l0"):
        if name not in arrays:
            raise ValueError(
                f"state_dict: missing key {name!r}; expected PyTorch's LSTM names (weight_ih_l0, "
                f"weight_hh_l0, bias_ih_l0, …), got {sorted(arrays)}"
            )
        if arrays[name].ndim != 2:
            raise ValueError(f"state_dict: {name} must be a 2-D array, got {arrays[name].shape}")
    gate_rows, input_size = arrays["weight_ih_l0"].shape
    if gate_rows % 4 or gate_rows == 0:
        raise ValueError(f"weight_ih_l0: expected 4H rows, got shape {(gate_rows, input_size)}")
    num_layers = 1 + max(int(PARAMETER_NAME.fullmatch(name)[2]) for name in arrays)
    if dtype is None:
        dtype = arrays["weight_ih_l0"].dtype
        if dtype.kind != "f":
            raise TypeError(f"weight_ih_l0: expected float32 or float64 weights, got {dtype}")
        dtype = np.promote_types(dtype, np.float32)  # half precision → float32
    model = LSTM(
        input_size,
        gate_rows // 4,
        num_layers,
        bias="bias_ih_l0" in arrays,
        batch_first=batch_first,
        bidirectional="weight_ih_l0_reverse" in arrays,
        proj_size=arrays["weight_hr_l0"].shape[0] if "weight_hr_l0" in arrays else 0,
        dtype=check_dtype(dtype),
        peepholes="peephole_l0" in arrays,
        **options,
    )
    model.load_state_dict(arrays)
    return model


def _torch_class_name(module):
    """The name of ``module``'s class, or for a TorchScript module the scripted class's."""
    return getattr(module, "original_name", None) or type(module).__name__


def _is_torch_lstm(module):
    """Whether ``module`` is a ``torch.nn.LSTM``, scripted or not (by name and attribute: torch
    not imported)."""
    return _torch_class_name(module) == "LSTM" and hasattr(module, "proj_size")


def to_torch(model):
    """A ``torch.nn.LSTM`` equal to ``model`` (needs torch): its configuration and a copy of its
    weights, in evaluation mode; ``from_torch`` reads it back. ONNX's options (``reverse``,
    ``peepholes``, ``clip``, ``input_forget``, other activations) have no equivalent in torch: a
    ``ValueError`` naming them."""
    onnx_options = [
        name for name in ("reverse", "peepholes", "input_forget") if getattr(model, name)
    ]
    onnx_options += ["clip"] * (model.clip is not None)
    onnx_options += ["activations"] * (
        model.activations != DEFAULT_ACTIVATIONS * model.num_directions
    )
    if onnx_options:
        raise ValueError(
            f"to_torch: torch.nn.LSTM has no {', '.join(onnx_options)} (ONNX's options)"
        )
    torch = import_optional("torch")
    module = torch.nn.LSTM(
        model.input_size,
        model.hidden_size,
        num_layers=model.num_layers,
        bias=model.bias,
        batch_first=model.batch_first,
        bidirectional=model.bidirectional,
        proj_size=model.proj_size,
        dtype=getattr(torch, model.dtype.name),
    )
    module.load_state_dict({name: torch.from_numpy(w) for name, w in model.state_dict().items()})
    return module.eval()


def _is_torch_lstm_cell(module):
    """Whether ``module`` is a ``torch.nn.LSTMCell``, scripted or not (by name and attribute)."""
    return _torch_class_name(module) == "LSTMCell" and hasattr(module, "weight_hh")


def from_torch(module):
    """An ``LSTM`` equal to a ``torch.nn.LSTM`` module: its configuration and its weights copied
    to NumPy, layout unchanged (see ``from_state_dict``); half-precision weights (float16,
    bfloat16) become float32, as in ``from_onnx``; dropout is a training feature and is
    ignored. A ``torch.nn.LSTMCell`` gives the one-layer ``LSTM`` (batch-first) that runs the
    cell over each step of a sequence: ``model.stream(B).step(x)`` of x (B, I) is one call of
    the cell. TorchScript modules of either (``torch.jit.script``) too."""
    if isinstance(module, LSTM):
        raise TypeError("from_torch: expected a torch.nn.LSTM, got an lstm_numba.LSTM (use it)")
    if _is_torch_lstm_cell(module):
        weights = {f"{name}_l0": value for name, value in module.state_dict().items()}
        return from_state_dict(weights)
    if not _is_torch_lstm(module):
        inside = [
            name
            for name, part in getattr(module, "named_modules", list)()
            if _is_torch_lstm(part) or _is_torch_lstm_cell(part)
        ]
        hint = _pass_one_of(inside, "from_torch(module.get_submodule({}))")
        got = _torch_class_name(module)
        raise TypeError(f"from_torch: expected a torch.nn.LSTM or LSTMCell, got {got}{hint}")
    return from_state_dict(module.state_dict(), batch_first=module.batch_first)


def _pass_one_of(names, example):
    """For an error about a model holding LSTMs of these ``names``: "; it holds ...: pass one,
    e.g. " and ``example`` with the first name, or "" where it holds none."""
    if not names:
        return ""
    return f"; it holds {', '.join(map(repr, names))}: pass one, e.g. " + example.format(
        repr(names[0])
    )


KERAS_ACTIVATIONS = {
    "sigmoid": ("sigmoid", ()),
    "tanh": ("tanh", ()),
    "relu": ("relu", ()),
    "linear": ("affine", (1.0, 0.0)),
    "hard_sigmoid": ("hardsigmoid", (1 / 6, 0.5)),  # Keras 3: relu6(x + 3) / 6
    "softsign": ("softsign", ()),
    "softplus": ("softplus", ()),
    "elu": ("elu", (1.0,)),
}
"""Keras activation names → (``LSTM`` activation, its ONNX alpha[, beta])."""


def _keras_activations(activation, recurrent_activation):
    """``LSTM``'s activations, alphas, betas for Keras's (gates, candidate & output)."""
    names, alphas, betas = [], [], []
    for argument, name in (
        ("recurrent_activation", recurrent_activation),
        ("activation", activation),
        ("activation", activation),
    ):
        if name not in KERAS_ACTIVATIONS:
            raise ValueError(
                f"{argument}: {name!r} has no LSTM equivalent here; expected one of "
                + ", ".join(KERAS_ACTIVATIONS)
            )
        ours, parameters = KERAS_ACTIVATIONS[name]
        names.append(ours)
        alphas += parameters[:1]
        betas += parameters[1:]
    return {"activations": names, "activation_alpha": alphas, "activation_beta": betas}


def _keras_direction(weights):
    """PyTorch-layout weights of one Keras LSTM's ``get_weights()`` list."""
    if len(weights) not in (2, 3):
        raise ValueError(
            "weights: expected [kernel, recurrent_kernel, bias] or, without bias, "
            f"[kernel, recurrent_kernel]; got {len(weights)} arrays"
        )
    kernel, recurrent = (np.asarray(w) for w in weights[:2])
    if kernel.ndim != 2 or recurrent.ndim != 2 or recurrent.shape[1] != 4 * recurrent.shape[0]:
        raise ValueError(
            "weights: expected kernel (I, 4H) and recurrent_kernel (H, 4H), got "
            f"{kernel.shape} and {recurrent.shape}"
        )
    if kernel.shape[1] != recurrent.shape[1]:
        raise ValueError(
            f"weights: expected kernel (I, 4H) with recurrent_kernel's 4H = {recurrent.shape[1]} "
            f"columns, got kernel {kernel.shape} and recurrent_kernel {recurrent.shape}"
        )
    converted = {"weight_ih": kernel.T, "weight_hh": recurrent.T}
    if len(weights) == 3:
        bias = np.asarray(weights[2])
        if bias.shape != (kernel.shape[1],):
            raise ValueError(
                f"weights: expected bias (4H,) = ({kernel.shape[1]},), got {bias.shape}"
            )
        converted["bias_ih"], converted["bias_hh"] = bias, np.zeros_like(bias)
    return converted


def from_keras_weights(
    weights,
    *,
    backward_weights=None,
    go_backwards=False,
    activation="tanh",
    recurrent_activation="sigmoid",
    batch_first=True,
    dtype=None,
):
    """An ``LSTM`` from a Keras LSTM's ``get_weights()``: ``[kernel (I, 4H), recurrent_kernel
    (H, 4H), bias (4H,)]`` (no bias with ``use_bias=False``), gates i, f, c, o.

    ``backward_weights``: the backward layer's list, for a ``Bidirectional`` wrapper (concatenated
    outputs, forward first, as ``merge_mode="concat"``). ``go_backwards``: a lone layer reading
    backwards; unlike Keras, which returns that layer's sequence reversed, y stays in input time
    order (Keras's y is ``y[:, ::-1]`` for full-length sequences; h_n, c_n agree).
    ``activation``/``recurrent_activation``: Keras's names. ``unit_forget_bias`` only initialises
    a bias and needs nothing here.
    """
    if backward_weights is not None and go_backwards:
        raise ValueError("go_backwards: not with backward_weights (a Bidirectional wrapper)")
    directions = [_keras_direction(weights)]
    if backward_weights is not None:
        directions.append(_keras_direction(backward_weights))
    state = {}
    for suffix, direction in zip(("", "_reverse"), directions, strict=False):
        state.update({f"{name}_l0{suffix}": value for name, value in direction.items()})
    return from_state_dict(
        state,
        batch_first=batch_first,
        dtype=dtype,
        reverse=go_backwards,
        **_keras_activations(activation, recurrent_activation),
    )


def _is_keras_lstm(layer):
    """Whether ``layer`` is a Keras ``LSTM``, or an ``RNN`` of an ``LSTMCell`` (by class names)."""
    name = type(layer).__name__
    cell = getattr(layer, "cell", None)
    return name == "LSTM" or (name == "RNN" and type(cell).__name__ == "LSTMCell")


def from_keras(layer, *, batch_first=True, dtype=None):
    """An ``LSTM`` equal to a Keras ``LSTM`` layer (or ``RNN(LSTMCell(...))``), or a
    ``Bidirectional`` of two (``merge_mode="concat"``), from its configuration and
    ``get_weights()``; see ``from_keras_weights``. Stateful layers, dropout and masks are not
    carried over."""
    name = type(layer).__name__
    if name == "Bidirectional":
        if layer.merge_mode != "concat":
            raise ValueError(f"from_keras: merge_mode {layer.merge_mode!r}; only 'concat' maps")
        forward, backward = layer.forward_layer, layer.backward_layer
    else:
        forward, backward = layer, None
    if not _is_keras_lstm(forward):
        inside = [
            part.name
            for part in getattr(layer, "layers", ())
            if _is_keras_lstm(part) or type(part).__name__ == "Bidirectional"
        ]
        hint = _pass_one_of(inside, "from_keras(model.get_layer({}))")
        got = name if forward is layer else f"Bidirectional({type(forward).__name__})"
        raise TypeError(
            f"from_keras: expected a Keras LSTM or Bidirectional(LSTM), got {got}{hint}"
        )
    cell = getattr(forward, "cell", forward).get_config()  # the activations (Keras 3: a cell's)
    return from_keras_weights(
        forward.get_weights(),
        backward_weights=None if backward is None else backward.get_weights(),
        go_backwards=backward is None and forward.get_config()["go_backwards"],
        activation=cell["activation"],
        recurrent_activation=cell["recurrent_activation"],
        batch_first=batch_first,
        dtype=dtype,
    )


ONNX_ATTRIBUTES = {
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "input_forget",
    "layout",
}
"""The ONNX LSTM operator's attributes (opset 14); any other is an error."""


def _onnx_stack(graph, nodes):
    """The graph's LSTM ``nodes`` in layer order where they form one stack, each after the first
    reading the Y [T, D, B, H] of the one below (layout 0) as its X [T, B, D·H]: transposed by
    perm [0, 2, 1, 3] and reshaped by a constant shape [0, 0, D·H] or [0, 0, -1] (as ``to_onnx``
    writes it, and ``torch.onnx.export`` for two directions; T and B themselves where the graph's
    ``value_info`` gives them, as the dynamo exporter writes it), or for one direction squeezed
    on axis 1 (``torch.onnx.export``); else None. One node is a stack of one."""
    from onnx import helper, numpy_helper

    if len(nodes) == 1:
        return nodes
    producer = {output: node for node in graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    dimensions = {  # value name → its dimensions as value_info states them (None: unknown)
        value.name: [
            d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim
        ]
        for value in graph.value_info
    }

    def constant(name):  # an initializer's or a Constant node's value as a flat list, else None
        if name in initializers:
            return numpy_helper.to_array(initializers[name]).ravel().tolist()
        node = producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t).ravel().tolist()
        return None

    def layer_below(node):  # the LSTM node whose Y ``node`` reads as its X, or None
        step = producer.get(node.input[0])
        if step is None or step.op_type not in ("Reshape", "Squeeze"):
            return None
        squeezed = step.op_type == "Squeeze"
        if squeezed:
            attributes = {a.name: helper.get_attribute_value(a) for a in step.attribute}
            axes = constant(step.input[1]) if len(step.input) > 1 else attributes.get("axes")
            y = step.input[0]
            below = producer.get(y) if list(axes or []) in ([1], [-3]) else None
        else:
            shape, transpose = constant(step.input[1]), producer.get(step.input[0])
            if transpose is None or transpose.op_type != "Transpose":
                return None
            perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"]
            y = transpose.input[0]
            below = producer.get(y) if perm == [[0, 2, 1, 3]] else None
        if below is None or below.op_type != "LSTM" or below.output[0] != y:
            return None
        attributes = {a.name: helper.get_attribute_value(a) for a in below.attribute}
        directions = 2 if attributes.get("direction") == b"bidirectional" else 1
        if attributes.get("layout", 0) != 0:
            return None
        if squeezed:  # [T, 1, B, H]: one direction only
            return below if directions == 1 else None
        width = directions * attributes.get("hidden_size", -1)
        steps_rows = (dimensions.get(step.input[0]) or [None] * 4)[:2]  # [T, B, D, H]'s T, B
        kept = shape is not None and len(shape) == 3 and shape[2] in (width, -1)
        kept = kept and all(n in (0, known) for n, known in zip(shape, steps_rows, strict=False))
        return below if kept else None

    below = [layer_below(node) for node in nodes]
    above = {id(lower): node for node, lower in zip(nodes, below, strict=True) if lower}
    stack = [node for node, lower in zip(nodes, below, strict=True) if lower is None]
    if len(stack) != 1:
        return None
    while id(stack[-1]) in above:
        stack.append(above[id(stack[-1])])
    return stack if len(stack) == len(nodes) else None


def _onnx_lstm_nodes(onnx_model, node_name):
    """The LSTM nodes ``node_name`` designates: None (the only one, or a stack of them chained
    as ``to_onnx`` writes it, in layer order), a name, or a list of names."""
    nodes = [node for node in onnx_model.graph.node if node.op_type == "LSTM"]
    if node_name is None:
        if not nodes:
            operators = sorted({node.op_type for node in onnx_model.graph.node})
            raise ValueError(f"from_onnx: the graph has no LSTM node (operators: {operators})")
        stack = _onnx_stack(onnx_model.graph, nodes)  # one node is a stack of one
        if stack is None:
            names = [node.name for node in nodes]
            raise ValueError(
                f"from_onnx: {len(nodes)} LSTM nodes {names}; pass node_name= (one name, or a "
                "list of names to stack as layers)"
            )
        return stack
    by_name = {node.name: node for node in nodes}
    names = [node_name] if isinstance(node_name, str) else list(node_name)
    missing = [name for name in names if name not in by_name]
    if missing or not names:
        shown = node_name if isinstance(node_name, str) or not missing else missing
        raise ValueError(f"from_onnx: no LSTM node named {shown!r}")
    return [by_name[name] for name in names]


def _onnx_layer(node, layer, read):
    """Layer ``layer``'s weights under PyTorch's names, and ``LSTM``'s options, from one ONNX LSTM
    node; ``read(name)`` gives an input's array."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    unknown = sorted(attributes.keys() - ONNX_ATTRIBUTES)
    if unknown:
        raise ValueError(f"from_onnx: unknown LSTM attributes {unknown} on node {node.name!r}")

    def weight(position, label):
        if len(node.input) <= position or not node.input[position]:
            return None
        return read(node.input[position], label)

    w, r, b, p = weight(1, "W"), weight(2, "R"), weight(3, "B"), weight(7, "P")
    if w is None or r is None or w.ndim != 3 or r.ndim != 3:
        raise ValueError("from_onnx: W [D, 4H, I] and R [D, 4H, H] are required")
    directions, gate_rows, _ = w.shape
    hidden = gate_rows // 4
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    expected_directions = {"forward": 1, "reverse": 1, "bidirectional": 2}.get(direction)
    if expected_directions is None:
        raise ValueError(f"from_onnx: unknown direction {direction!r}")
    if directions != expected_directions or r.shape != (directions, gate_rows, hidden):
        raise ValueError(
            f"from_onnx: direction {direction!r} with W {w.shape} and R {r.shape}; expected "
            f"W [{expected_directions}, 4H, I] and R [{expected_directions}, 4H, H]"
        )
    if attributes.get("hidden_size", hidden) != hidden:
        raise ValueError(f"from_onnx: hidden_size {attributes['hidden_size']} but R is {r.shape}")
    for label, array, width in (("B", b, 8 * hidden), ("P", p, 3 * hidden)):
        if array is not None and array.shape != (directions, width):
            raise ValueError(
                f"from_onnx: {label} expected shape [D, {width // hidden}H] = "
                f"{(directions, width)}, got {array.shape}"
            )
    state = {}
    for d, suffix in enumerate(("", "_reverse")[:directions]):
        name = f"_l{layer}{suffix}"
        reorder = [_onnx_gate_order(a[d : d + 1], hidden, ONNX_TO_TORCH_GATES)[0] for a in (w, r)]
        state["weight_ih" + name], state["weight_hh" + name] = reorder
        biases = np.zeros((2, gate_rows), w.dtype) if b is None else b[d].reshape(2, gate_rows)
        reordered = _onnx_gate_order(biases, hidden, ONNX_TO_TORCH_GATES)
        state["bias_ih" + name], state["bias_hh" + name] = reordered
        if p is not None:
            state["peephole" + name] = p[d]
    options = {
        "batch_first": attributes.get("layout", 0) == 1,
        "dtype": np.dtype(np.float32 if w.dtype == np.float16 else w.dtype),
        "reverse": direction == "reverse",
        "clip": attributes.get("clip"),
        "input_forget": bool(attributes.get("input_forget", 0)),
        "activations": [
            name.decode() if isinstance(name, bytes) else name
            for name in attributes.get("activations", ["Sigmoid", "Tanh", "Tanh"])
        ],
        "activation_alpha": list(attributes.get("activation_alpha", ())),
        "activation_beta": list(attributes.get("activation_beta", ())),
        "peepholes": p is not None,
        "bidirectional": direction == "bidirectional",
    }
    return state, options


def _transposed_from_batch_first(graph, node):
    """Whether ``node``'s X is a Transpose by perm [1, 0, 2] of a (B, T, I) value, as
    ``torch.onnx.export`` writes an ``nn.LSTM(batch_first=True)`` (both exporters)."""
    from onnx import helper

    step = next((n for n in graph.node if node.input[0] in n.output), None)
    if step is None or step.op_type != "Transpose":
        return False
    perm = {a.name: helper.get_attribute_value(a) for a in step.attribute}.get("perm")
    return list(perm or []) == [1, 0, 2]


def from_onnx(model, node_name=None, *, weights=None, batch_first=None):
    """An ``LSTM`` equal to the ``LSTM`` node of an ONNX model (needs the ``onnx`` package).
    Layout as ``onnx/defs/rnn/defs.cc``: W [D, 4H, I], R [D, 4H, H], B [D, 8H] = [Wb, Rb], gates
    i, o, f, c (reordered to PyTorch's i, f, g, o); P [D, 3H] in i, o, f (kept).

    ``model``: a path, the serialized model (bytes, as ``torch.onnx.export`` writes to a
    ``BytesIO``) or a loaded ``ModelProto``; ``node_name``: which LSTM node, when there are
    several, or a list of node names to stack as layers in that order (their options must
    agree); without it, several nodes chained as ``to_onnx`` writes a multi-layer model are read
    as its layers. W, R, B and P are read from the graph's
    initializers, or from ``weights`` (name → array) for those that are graph inputs. Every
    attribute of the operator is honoured: direction (forward, reverse, bidirectional),
    hidden_size, activations with activation_alpha/beta, clip, input_forget, and layout (1 →
    ``batch_first=True``), so that ``run_onnx_io`` takes and returns the node's X, Y, Y_h, Y_c as
    they are. float16 weights become float32; float64 stays float64.

    ``batch_first``: None reads it off the graph: True where the (first) node has layout 1 or
    reads its X transposed from a (B, T, I) value (perm [1, 0, 2], as ``torch.onnx.export``
    writes an ``nn.LSTM(batch_first=True)``), so that ``model(x)`` takes the x the graph takes
    (``run_onnx_io`` then runs layout 1, X [B, T, I], unless given ``layout=0``, the node's);
    else False.
    """
    onnx = import_optional("onnx", "onnx")
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            model = onnx.load(path)
        except DecodeError as error:
            raise ValueError(f"model: {path} is not an ONNX model ({error})") from error
    elif isinstance(model, (bytes, bytearray)):
        try:
            model = onnx.load_from_string(bytes(model))
        except DecodeError as error:
            raise ValueError(f"model: the bytes given are not an ONNX model ({error})") from error
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(
            "model: expected a path, bytes or an onnx.ModelProto, got " + type(model).__name__
        )
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for tensor in initializers.values():
        if tensor.data_location == onnx.TensorProto.EXTERNAL:  # data not loaded with the model
            location = {entry.key: entry.value for entry in tensor.external_data}.get("location")
            raise ValueError(
                f"from_onnx: initializer {tensor.name!r} keeps its data in {location!r} beside "
                "the model's file (ONNX external data), which the bytes or ModelProto given do "
                "not hold: pass the file's path, or onnx.load(path)"
            )
    given = dict(weights or {})

    def read(name, label):
        if name in given:
            return np.asarray(given[name])
        if name in initializers:
            return numpy_helper.to_array(initializers[name])
        raise ValueError(
            f"from_onnx: {label} ({name!r}) is neither an initializer nor given in weights="
        )

    state, options = {}, None
    nodes = _onnx_lstm_nodes(model, node_name)
    for layer, node in enumerate(nodes):
        layer_state, layer_options = _onnx_layer(node, layer, read)
        for position, label in ((5, "initial_h"), (6, "initial_c")):
            name = node.input[position] if len(node.input) > position else ""
            if name in initializers and numpy_helper.to_array(initializers[name]).any():
                warnings.warn(
                    f"from_onnx: node {node.name!r}'s {label} is a constant that is not zero, "
                    "which the model does not keep: pass the initial states at each call, "
                    "model(x, (h0, c0))",
                    stacklevel=2,
                )
        if options is not None and layer_options != options:
            differ = sorted(k for k in options if options[k] != layer_options[k])
            raise ValueError(f"from_onnx: node {node.name!r} differs from the first in {differ}")
        state.update(layer_state)
        options = layer_options
    options.pop("peepholes")
    options.pop("bidirectional")
    if batch_first is None:
        batch_first = options["batch_first"] or _transposed_from_batch_first(model.graph, nodes[0])
    options["batch_first"] = bool(batch_first)
    return from_state_dict(state, **options)
