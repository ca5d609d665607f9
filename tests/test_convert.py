"""Weights in and out: PyTorch, Keras, ONNX, .npz and .safetensors, each against its oracle."""

import importlib.util
import io
import os
import pickle
import sys
import warnings

import numpy as np
import pytest
from conftest import assert_close

import lstm_numba as ln
from lstm_numba.convert import to_onnx

CONFIGURATIONS = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"proj_size": 3, "bias": False, "batch_first": False},
    {"reverse": True, "peepholes": True, "clip": 1.0, "dtype": np.float64},
    {"bidirectional": True, "activations": ("hard_sigmoid", "relu", "tanh"), "input_forget": True},
]


def random_input(rng, model, batch=3, steps=5):
    shape = (batch, steps) if model.batch_first else (steps, batch)
    return rng.standard_normal((*shape, model.input_size)).astype(model.dtype)


def assert_same_model(actual, expected, float_attributes_in_float32=False):
    """Same configuration and bit-identical weights (ONNX stores clip and activation_alpha/beta
    as float32 attributes: compared to float32 precision when ``float_attributes_in_float32``)."""
    config, expected_config = actual.config, expected.config
    if float_attributes_in_float32:
        for name in ("clip", "activation_alpha", "activation_beta"):
            if config[name] is not None:
                np.testing.assert_allclose(config[name], expected_config[name], rtol=1e-7)
                config[name] = expected_config[name]
    assert config == expected_config
    weights = expected.state_dict()
    assert actual.state_dict().keys() == weights.keys()
    for name, value in actual.state_dict().items():
        assert value.dtype == weights[name].dtype
        np.testing.assert_array_equal(value, weights[name], err_msg=name)


# --- state_dict and torch -----------------------------------------------------------------------


@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_from_state_dict_reads_the_structure_off_the_names(options):
    model = ln.LSTM(4, 6, **options, seed=1)
    onnx_options = {
        name: value
        for name, value in model.config.items()
        if name in ("reverse", "clip", "input_forget", "activations", "activation_alpha")
        or name in ("activation_beta", "batch_first")
    }
    assert_same_model(ln.from_state_dict(model.state_dict(), **onnx_options), model)


def test_from_state_dict_refuses_what_the_weights_give():
    """The structure comes from the weights: passing it was Python's "got multiple values for
    keyword argument", and ``seed`` was ignored."""
    weights = ln.LSTM(3, 4, num_layers=2).state_dict()
    pattern = r"from_state_dict: not arguments here: bidirectional, hidden_size \(the weights'"
    with pytest.raises(TypeError, match=pattern):
        ln.from_state_dict(weights, bidirectional=True, hidden_size=4)
    with pytest.raises(TypeError, match=r"not arguments here: seed \(.* replace any seed's\)"):
        ln.from_state_dict(weights, seed=0)


def test_from_state_dict_casts_when_asked():
    weights = ln.LSTM(3, 4, dtype=np.float64, seed=2).state_dict()
    model = ln.from_state_dict(weights, dtype=np.float32)
    assert model.dtype == np.float32 and model.weight_ih_l0.dtype == np.float32


def test_half_precision_weights_load_exactly():
    """float16 weights (a state_dict, an attribute) are cast up exactly: a float32 model unless
    another dtype is asked for, as ``from_torch`` and ``from_onnx`` do."""
    half = {k: v.astype(np.float16) for k, v in ln.LSTM(3, 4, seed=2).state_dict().items()}
    for dtype, expected in ((None, np.float32), (np.float64, np.float64)):
        model = ln.from_state_dict(half, dtype=dtype)
        assert model.dtype == expected
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, half[name].astype(expected), err_msg=name)
    model.weight_hh_l0 = half["weight_hh_l0"] * 2
    np.testing.assert_array_equal(model.weight_hh_l0, half["weight_hh_l0"].astype(np.float64) * 2)


@pytest.mark.parametrize(
    "change, error, pattern",
    [
        (lambda w: w.update(extra=np.zeros(3)), ValueError, r"unexpected keys \['extra'\]"),
        (
            lambda w: w.pop("weight_ih_l0"),
            ValueError,
            r"missing key 'weight_ih_l0'; expected PyTorch's LSTM names .*got \['bias_hh_l0',",
        ),
        (lambda w: w.update(weight_ih_l0=np.zeros(48)), ValueError, r"weight_ih_l0 must be a 2-D"),
        (lambda w: w.update(weight_ih_l0=np.zeros((15, 3))), ValueError, r"expected 4H rows"),
        (lambda w: w.pop("bias_hh_l1"), ValueError, r"missing key 'bias_hh_l1'"),
        (
            lambda w: w.update(weight_hh_l1=np.zeros((16, 5), np.float32)),
            ValueError,
            r"weight_hh_l1: expected shape \(4H, H_out\) = \(16, 4\), got \(16, 5\)",
        ),
        (
            lambda w: w.update(weight_ih_l0=np.zeros((16, 3), np.int32)),
            TypeError,
            r"expected float32 or float64 weights, got int32",
        ),
        (
            lambda w: w.update({f"encoder.lstm.{k}": w.pop(k) for k in list(w)}),
            ValueError,
            r"every key starts with 'encoder.lstm.' .*"
            r"\{k.removeprefix\('encoder.lstm.'\): v for k, v in state_dict.items\(\)\}",
        ),
        (
            lambda w: w.update(__lstm_numba_config__=np.zeros(3, np.uint8)),
            ValueError,
            r"__lstm_numba_config__ is LSTM.save's: read such a file with lstm_numba.load",
        ),
        (
            lambda w: w.update(weight_hh_l0=[[0.0] * 4] * 15 + [[0.0] * 3]),
            TypeError,
            r"weight_hh_l0: expected a float32 or float64 array; NumPy cannot read the list given",
        ),
    ],
)
def test_from_state_dict_errors(change, error, pattern):
    weights = ln.LSTM(3, 4, num_layers=2, seed=3).state_dict()
    change(weights)
    with pytest.raises(error, match=pattern):
        ln.from_state_dict(weights)


TORCH_CONFIGURATIONS = [
    {},
    {"num_layers": 3, "bidirectional": True, "batch_first": True},
    {"num_layers": 2, "proj_size": 2, "bias": False},
    {"bidirectional": True, "dtype": "float64"},
]


@pytest.mark.parametrize("options", TORCH_CONFIGURATIONS)
def test_from_torch_matches_torch(rng, options):
    torch = pytest.importorskip("torch")
    options = dict(options)
    dtype = getattr(torch, options.pop("dtype", "float32"))
    module = torch.nn.LSTM(4, 5, **options, dtype=dtype)
    model = ln.from_torch(module)
    assert model.batch_first == module.batch_first and model.dtype == np.dtype(str(dtype)[6:])
    x = random_input(rng, model)
    with torch.no_grad():
        y_t, (h_t, c_t) = module(torch.from_numpy(x))
    y, (h_n, c_n) = model(x)
    assert_close(y, y_t.numpy())
    assert_close(h_n, h_t.numpy())
    assert_close(c_n, c_t.numpy())


def test_to_torch_is_the_model_in_torch(monkeypatch):
    """``to_torch`` gives a module in evaluation mode that ``from_torch`` reads back as the
    model, with weights of its own; ONNX's options are named as torch lacking them."""
    torch = pytest.importorskip("torch")
    model = ln.LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3, batch_first=False,
                    dtype=np.float64, seed=3)  # fmt: skip
    module = ln.to_torch(model)
    assert not module.training and not module.batch_first
    assert module.weight_hh_l0.dtype == torch.float64
    assert_same_model(ln.from_torch(module), model)
    before = module.weight_hh_l0.detach().clone()
    model.weight_hh_l0[0, 0] += 1.0
    assert torch.equal(module.weight_hh_l0.detach(), before)
    for option, value in [
        ("reverse", True),
        ("peepholes", True),
        ("clip", 1.0),
        ("input_forget", True),
        ("activations", ("sigmoid", "relu", "tanh")),
    ]:
        with pytest.raises(ValueError, match=rf"to_torch: torch.nn.LSTM has no {option} "):
            ln.to_torch(ln.LSTM(3, 4, **{option: value}))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"torch is not installed; install it with pip install "
                       r"torch$"):  # fmt: skip
        ln.to_torch(model)


@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_of_a_cell_runs_it_over_the_steps(rng, bias):
    """A ``torch.nn.LSTMCell``: the one-layer model equals the cell called step after step, and
    a stream's one-step chunk is one call of it."""
    torch = pytest.importorskip("torch")
    cell = torch.nn.LSTMCell(3, 4, bias=bias)
    model = ln.from_torch(cell)
    assert model.batch_first and model.bias == bias
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    h = c = torch.zeros(2, 4)
    outputs = []
    with torch.no_grad():
        for t in range(5):
            h, c = cell(torch.from_numpy(x[:, t]), (h, c))
            outputs.append(h.numpy())
    y, (h_n, c_n) = model(x)
    assert_close(y, np.stack(outputs, axis=1))
    assert_close(c_n[0], c.numpy())
    with torch.no_grad():
        h_1, _ = cell(torch.from_numpy(x[:, 0]))
    assert_close(model.stream(2).step(x[:, :1])[:, 0], h_1.numpy())


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_from_torch_widens_half_precision_to_float32(rng, half):
    """A half-precision module's weights exactly, in a float32 model: torch's own float32
    forward on those weights is the oracle."""
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(4, 5, num_layers=2).to(getattr(torch, half))
    model = ln.from_torch(module)
    assert model.dtype == np.float32
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value.float().numpy())
    x = random_input(rng, model)
    with torch.no_grad():
        y_t, _ = module.float()(torch.from_numpy(x))
    assert_close(model(x)[0], y_t.numpy())


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_torch_tensors_load_as_weights(half):
    """A module's parameters (which require grad) and half-precision tensors load as
    ``from_torch`` reads them, through ``from_state_dict``, ``load_state_dict`` and an
    attribute; each was NumPy's "Can't call numpy() on Tensor that requires grad" or
    "unsupported ScalarType BFloat16"."""
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(3, 4, num_layers=2)
    parameters = dict(module.named_parameters())
    assert all(value.requires_grad for value in parameters.values())
    model = ln.LSTM(3, 4, num_layers=2, batch_first=False, seed=0)
    model.load_state_dict(parameters)
    for name, value in parameters.items():  # torch's own values, read independently
        np.testing.assert_array_equal(model.state_dict()[name], value.detach().numpy())
    model.weight_hh_l1 = parameters["weight_hh_l0"] * 2
    np.testing.assert_array_equal(model.weight_hh_l1, module.weight_hh_l0.detach().numpy() * 2)
    halved = {name: value.to(getattr(torch, half)) for name, value in parameters.items()}
    from_dict = ln.from_state_dict(halved, batch_first=False)
    assert from_dict.dtype == np.float32
    for name, value in halved.items():
        np.testing.assert_array_equal(from_dict.state_dict()[name], value.detach().float().numpy())


def test_from_torch_rejects_other_modules():
    torch = pytest.importorskip("torch")
    with pytest.raises(
        TypeError, match="from_torch: expected a torch.nn.LSTM or LSTMCell, got GRU$"
    ):
        ln.from_torch(torch.nn.GRU(3, 4))
    network = torch.nn.ModuleDict({"encoder": torch.nn.LSTM(3, 4), "head": torch.nn.Linear(4, 1)})
    with pytest.raises(TypeError, match=r"got ModuleDict; it holds 'encoder': pass one, e.g. "
                       r"from_torch\(module.get_submodule\('encoder'\)\)"):  # fmt: skip
        ln.from_torch(network)
    with pytest.raises(TypeError, match=r"got an lstm_numba.LSTM \(use it\)"):
        ln.from_torch(ln.LSTM(3, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_from_torch_of_scripted_modules():
    """TorchScript (``torch.jit.script``, and so ``torch.jit.load`` of a deployed file) of an
    LSTM or a cell reads as the module itself does; of another module, named as that."""
    torch = pytest.importorskip("torch")
    for module in (torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True), torch.nn.LSTMCell(3, 4)):
        assert_same_model(ln.from_torch(torch.jit.script(module)), ln.from_torch(module))
    with pytest.raises(TypeError, match=r"expected a torch.nn.LSTM or LSTMCell, got GRU$"):
        ln.from_torch(torch.jit.script(torch.nn.GRU(3, 4)))


# --- Keras ---------------------------------------------------------------------------------------


def keras_forward(x, kernel, recurrent_kernel, bias, go_backwards=False):
    """Keras's LSTM written out from its source (keras/src/layers/rnn/lstm.py, LSTMCell.call):
    z = x·kernel + h·recurrent_kernel + bias split into i, f, c, o; float64; (y, h, c) with y
    in Keras's order (reversed when ``go_backwards``)."""
    from scipy.special import expit

    batch, steps, _ = x.shape
    hidden = recurrent_kernel.shape[0]
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    ys = []
    for t in reversed(range(steps)) if go_backwards else range(steps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=1)
        c = expit(f) * c + expit(i) * np.tanh(g)
        h = expit(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys, axis=1), h, c


@pytest.mark.parametrize("go_backwards", [False, True])
def test_from_keras_weights_follows_the_keras_layout(rng, go_backwards):
    inputs, hidden = 3, 5
    kernel = rng.standard_normal((inputs, 4 * hidden)) * 0.5
    recurrent = rng.standard_normal((hidden, 4 * hidden)) * 0.5
    bias = rng.standard_normal(4 * hidden) * 0.5
    model = ln.from_keras_weights([kernel, recurrent, bias], go_backwards=go_backwards)
    assert model.dtype == np.float64 and model.reverse == go_backwards
    x = rng.standard_normal((2, 6, inputs))
    y_keras, h_keras, c_keras = keras_forward(x, kernel, recurrent, bias, go_backwards)
    y, (h_n, c_n) = model(x)
    assert_close(y[:, ::-1] if go_backwards else y, y_keras)
    assert_close(h_n[0], h_keras)
    assert_close(c_n[0], c_keras)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (
            lambda k, r, b: ln.from_keras_weights([k]),
            r"expected \[kernel, recurrent_kernel, bias\]",
        ),
        (lambda k, r, b: ln.from_keras_weights([k, k, b]), r"recurrent_kernel \(H, 4H\)"),
        (lambda k, r, b: ln.from_keras_weights([k, r, b[:-1]]), r"expected bias \(4H,\)"),
        (
            lambda k, r, b: ln.from_keras_weights([k[:, :4], r, b]),
            r"expected kernel \(I, 4H\) with recurrent_kernel's 4H = 8 columns, got kernel \(3,",
        ),
        (
            lambda k, r, b: ln.from_keras_weights([k, r, b], activation="gelu"),
            r"activation: 'gelu' has no LSTM equivalent",
        ),
        (
            lambda k, r, b: ln.from_keras_weights(
                [k, r, b], backward_weights=[k, r, b], go_backwards=True
            ),  # fmt: skip
            r"go_backwards: not with backward_weights",
        ),
    ],
)
def test_from_keras_weights_errors(call, pattern):
    kernel, recurrent, bias = np.zeros((3, 8)), np.zeros((2, 8)), np.zeros(8)
    with pytest.raises(ValueError, match=pattern):
        call(kernel, recurrent, bias)


@pytest.fixture
def keras(monkeypatch):
    """Keras 3 when importable (never a dependency), on torch when TensorFlow is absent."""
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
        backend = "torch" if importlib.util.find_spec("torch") else "numpy"
        monkeypatch.setenv("KERAS_BACKEND", backend)
    return pytest.importorskip("keras")


KERAS_LAYERS = [
    {},
    {"use_bias": False},
    {"go_backwards": True},
    {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {"bidirectional": True},
    {"cell": True, "activation": "softsign"},
    {"cell": True, "bidirectional": True},
]


@pytest.mark.parametrize("options", KERAS_LAYERS)
def test_from_keras_matches_keras(rng, keras, options):
    options = dict(options)
    bidirectional = options.pop("bidirectional", False)
    if options.pop("cell", False):  # RNN(LSTMCell(...))
        cell = keras.layers.LSTMCell(5, bias_initializer="glorot_uniform", **options)
        layer = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    else:
        layer = keras.layers.LSTM(
            5, return_sequences=True, return_state=True, bias_initializer="glorot_uniform",
            **options,
        )  # fmt: skip
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    outputs = [keras.ops.convert_to_numpy(o) for o in layer(x)]
    model = ln.from_keras(layer)
    y, (h_n, c_n) = model(x)
    if options.get("go_backwards"):
        y = y[:, ::-1]
    assert_close(y, outputs[0])
    states = outputs[1:]  # h, c per direction
    assert_close(h_n, np.stack(states[0::2]))
    assert_close(c_n, np.stack(states[1::2]))


def test_from_keras_of_a_model_names_its_lstm_layers():
    """A Keras model holding LSTM layers (stand-ins of Keras's classes, by name): the error names
    them and how to pass one."""
    encoder = type("LSTM", (), {"name": "encoder"})()
    network = type("Sequential", (), {"layers": [object(), encoder]})()
    with pytest.raises(TypeError, match=r"got Sequential; it holds 'encoder': pass one, e.g. "
                       r"from_keras\(model.get_layer\('encoder'\)\)"):  # fmt: skip
        ln.from_keras(network)
    with pytest.raises(TypeError, match=r"got object$"):
        ln.from_keras(object())
    gru = type("GRU", (), {})()
    halves = {"merge_mode": "concat", "forward_layer": gru, "backward_layer": gru}
    bidirectional = type("Bidirectional", (), halves)()
    with pytest.raises(TypeError, match=r"got Bidirectional\(GRU\)$"):
        ln.from_keras(bidirectional)
    summed = type("Bidirectional", (), {**halves, "merge_mode": "sum"})()
    with pytest.raises(ValueError, match=r"from_keras: merge_mode 'sum'; only 'concat' maps"):
        ln.from_keras(summed)


# --- ONNX ---------------------------------------------------------------------------------------


def onnx_backend_lstm_cases():
    pytest.importorskip("onnx")
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # building every operator's cases warns here and there
        cases = collect_testcases(None)
    return [case for case in cases if case.name.startswith("test_lstm")]


def test_onnx_backend_node_tests_pass():
    """Every LSTM case of ONNX's backend node tests, through from_onnx + run_onnx_io."""
    cases = onnx_backend_lstm_cases()
    assert {case.name for case in cases} >= {
        "test_lstm_defaults",
        "test_lstm_with_initial_bias",
        "test_lstm_with_peepholes",
        "test_lstm_batchwise",
        "test_lstm_reverse",
        "test_lstm_bidirectional",
    }
    for case in cases:
        graph = case.model.graph
        node = graph.node[0]
        for inputs, expected in case.data_sets:
            given = {value.name: array for value, array in zip(graph.input, inputs, strict=True)}
            model = ln.from_onnx(case.model, weights=given)
            arguments = [
                given.get(node.input[k]) if len(node.input) > k and node.input[k] else None
                for k in (0, 4, 5, 6)
            ]
            results = dict(zip(("Y", "Y_h", "Y_c"), model.run_onnx_io(*arguments), strict=True))
            names = [graph_output.name for graph_output in graph.output]
            positions = {name: ("Y", "Y_h", "Y_c")[list(node.output).index(name)] for name in names}
            for name, value in zip(names, expected, strict=True):
                assert_close(results[positions[name]], value)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"bidirectional": True, "peepholes": True},
        {"reverse": True, "clip": 0.7, "input_forget": True},
        {"activations": ("HardSigmoid", "LeakyRelu", "Tanh"), "activation_alpha": (0.3, 0.05)},
    ],
)
def test_onnx_round_trip_matches_onnx_runtime(rng, tmp_path, options):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = ln.LSTM(4, 5, batch_first=False, **options, seed=4)
    onnx.save(to_onnx(model, sequence_lens=True), tmp_path / "lstm.onnx")
    loaded = ln.from_onnx(tmp_path / "lstm.onnx")
    assert_same_model(loaded, model, float_attributes_in_float32=True)
    x = random_input(rng, model)
    states = rng.standard_normal((2, model.num_directions, 3, 5)).astype(np.float32)
    lengths = np.array([5, 1, 3], np.int32)
    session = ort.InferenceSession(str(tmp_path / "lstm.onnx"), providers=["CPUExecutionProvider"])
    feed = {"X": x, "initial_h": states[0], "initial_c": states[1], "sequence_lens": lengths}
    for ours, theirs in zip(
        loaded.run_onnx_io(x, lengths, *states), session.run(None, feed), strict=True
    ):
        assert_close(ours, theirs)


def test_stacked_onnx_nodes_load_as_layers(rng):
    """``to_onnx`` writes a node per layer; ``from_onnx`` reads one model back, the nodes found
    by their chain or named, and its ONNX-shaped call equals ONNX Runtime's on the whole graph;
    nodes chained otherwise (a transpose of other axes) need their names."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = ln.LSTM(3, 4, num_layers=3, bidirectional=True, batch_first=False, seed=11)
    onnx_model = to_onnx(model)
    assert_same_model(ln.from_onnx(onnx_model), model)
    assert_same_model(ln.from_onnx(to_onnx(model, initial_states=False)), model)
    batch_first = ln.LSTM(**{**model.config, "batch_first": True})
    batch_first.load_state_dict(model.state_dict())
    assert_same_model(ln.from_onnx(to_onnx(batch_first)), batch_first)  # its transposes read
    loaded = ln.from_onnx(onnx_model, node_name=["LSTM_l0", "LSTM_l1", "LSTM_l2"])
    assert_same_model(loaded, model)
    for change in ("perm", "shape"):  # a transpose of other axes; a reshape to other widths
        other_chain = onnx.ModelProto()
        other_chain.CopyFrom(onnx_model)
        if change == "perm":
            node = next(node for node in other_chain.graph.node if node.op_type == "Transpose")
            node.attribute[0].ints[:] = [0, 1, 2, 3]
        else:
            shape = next(t for t in other_chain.graph.initializer if t.name == "Y_l0_shape")
            shape.CopyFrom(onnx.numpy_helper.from_array(np.array([0, 0, 4]), "Y_l0_shape"))
        with pytest.raises(ValueError, match=r"3 LSTM nodes .* list of names to stack as layers"):
            ln.from_onnx(other_chain)
    x = random_input(rng, model)
    states = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
    session = ort.InferenceSession(onnx_model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    expected = session.run(None, {"X": x, "initial_h": states[0], "initial_c": states[1]})
    for ours, theirs in zip(loaded.run_onnx_io(x, None, *states), expected, strict=True):
        assert_close(ours, theirs)
    onnx_model.graph.node[2].attribute.append(onnx.helper.make_attribute("clip", 2.0))
    with pytest.raises(ValueError, match=r"node 'LSTM_l1' differs from the first in \['clip'\]"):
        ln.from_onnx(onnx_model, node_name=["LSTM_l0", "LSTM_l1"])


def test_stack_with_static_reshapes_loads_where_the_graph_states_t_and_b():
    """torch's dynamo exporter reshapes each layer's Y to constant [T, B, D·H] (T, B of the
    example input) and states the shapes in ``value_info``: a stack where those agree, not where
    the reshape swaps T and B or where nothing states them."""
    onnx = pytest.importorskip("onnx")
    model = ln.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=False, seed=12)
    steps, rows = 5, 2

    def static_export(shape, with_shapes=True):
        exported = to_onnx(model)
        for axis, size in zip(exported.graph.input[0].type.tensor_type.shape.dim[:2],
                              (steps, rows), strict=True):  # fmt: skip
            axis.dim_value = size
        reshape = next(t for t in exported.graph.initializer if t.name == "Y_l0_shape")
        reshape.CopyFrom(onnx.numpy_helper.from_array(np.array(shape), "Y_l0_shape"))
        return onnx.shape_inference.infer_shapes(exported) if with_shapes else exported

    assert_same_model(ln.from_onnx(static_export([steps, rows, 8])), model)
    assert_same_model(ln.from_onnx(static_export([0, rows, -1])), model)
    for shape, with_shapes in (([rows, steps, 8], True), ([steps, rows, 8], False)):
        with pytest.raises(ValueError, match=r"2 LSTM nodes .* list of names"):
            ln.from_onnx(static_export(shape, with_shapes))


def test_constant_initial_states_that_are_not_zero_warn():
    """A node whose initial_h or initial_c is a non-zero initializer: the model cannot keep it
    (states are a call's hx), so reading it warns; zeros, as exporters write them, do not."""
    onnx = pytest.importorskip("onnx")
    model = ln.LSTM(3, 4, batch_first=False, seed=13)
    exported = to_onnx(model)
    for name, value in (("initial_h", 0.0), ("initial_c", 0.5)):
        del exported.graph.input[[i.name for i in exported.graph.input].index(name)]
        exported.graph.initializer.append(
            onnx.numpy_helper.from_array(np.full((1, 2, 4), value, np.float32), name)
        )
    with pytest.warns(UserWarning, match=r"'LSTM_l0''s initial_c is a constant that is not zero"):
        assert_same_model(ln.from_onnx(exported), model)
    exported.graph.initializer[-1].CopyFrom(
        onnx.numpy_helper.from_array(np.zeros((1, 2, 4), np.float32), "initial_c")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ln.from_onnx(exported)


def test_run_onnx_io_layouts_agree(rng):
    """Layout 1 (batch_first) is layout 0 with the batch axis first."""
    time_major = ln.LSTM(3, 4, bidirectional=True, batch_first=False, seed=5)
    batch_major = ln.from_state_dict(time_major.state_dict(), batch_first=True)
    x = random_input(rng, time_major)
    h0, c0 = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    y0, h_0, c_0 = time_major.run_onnx_io(x, None, h0, c0)
    y1, h_1, c_1 = batch_major.run_onnx_io(x.transpose(1, 0, 2), None, h0.transpose(1, 0, 2),
                                           c0.transpose(1, 0, 2))  # fmt: skip
    assert y0.shape == (5, 2, 3, 4) and y1.shape == (3, 5, 2, 4)
    np.testing.assert_array_equal(y1, y0.transpose(2, 0, 1, 3))
    np.testing.assert_array_equal(h_1, h_0.transpose(1, 0, 2))
    np.testing.assert_array_equal(c_1, c_0.transpose(1, 0, 2))
    with pytest.raises(ValueError, match=r"initial_h: expected shape \[B, D, H\] = \(3, 2, 4\)"):
        batch_major.run_onnx_io(x.transpose(1, 0, 2), None, h0, c0)
    # layout= runs either on either model: a batch-first model from a graph that transposes X
    # for a node of layout 0 (torch's export) runs that node with layout=0
    turned = batch_major.run_onnx_io(x, None, h0, c0, layout=0)
    for ours, expected in zip(turned, (y0, h_0, c_0), strict=True):
        assert_close(ours, expected)
    for states in (
        (h0.transpose(1, 0, 2), c0.transpose(1, 0, 2)),  # [B, D, H] views
        (np.ascontiguousarray(h0.transpose(1, 0, 2)), np.ascontiguousarray(c0.transpose(1, 0, 2))),
    ):  # the node transposes [B, D, H] arrays of its own to the kernels' [D, B, H]
        turned = time_major.run_onnx_io(x.transpose(1, 0, 2), None, *states, layout=1)
        for ours, expected in zip(turned, (y1, h_1, c_1), strict=True):
            assert_close(ours, expected)
    for layout in (2, True, "0"):
        with pytest.raises(ValueError, match=r"layout: expected 0, 1 or None, got"):
            time_major.run_onnx_io(x, layout=layout)


def test_run_onnx_io_one_initial_state_and_bad_input(rng):
    """ONNX's optional inputs: initial_h alone leaves initial_c zeros, and the other way round;
    an X of other than three axes is named."""
    model = ln.LSTM(3, 4, batch_first=False, seed=7)
    x = random_input(rng, model)
    h0, c0 = rng.standard_normal((2, 1, 3, 4)).astype(np.float32)
    zeros = np.zeros_like(h0)
    for only_h, with_zeros in (((h0, None), (h0, zeros)), ((None, c0), (zeros, c0))):
        for ours, expected in zip(
            model.run_onnx_io(x, None, *only_h), model.run_onnx_io(x, None, *with_zeros),
            strict=True,
        ):  # fmt: skip
            np.testing.assert_array_equal(ours, expected)
    assert not np.allclose(model.run_onnx_io(x, None, h0)[0], model.run_onnx_io(x)[0])
    with pytest.raises(ValueError, match=r"X: expected \[T, B, I\] .* got shape \(5, 3\)"):
        model.run_onnx_io(x[:, 0])


def edited_onnx(change):
    """An exported model with ``change(graph)`` applied."""
    pytest.importorskip("onnx")
    onnx_model = to_onnx(ln.LSTM(3, 4, seed=6), batch_first=False)  # the node first
    change(onnx_model.graph)
    return onnx_model


def add_attribute(graph):
    from onnx import helper

    graph.node[0].attribute.append(helper.make_attribute("mystery", 1))


def duplicate_node(graph):
    graph.node.append(graph.node[0])


def set_attribute(name, value):
    """A change of ``edited_onnx``: the LSTM node's attribute ``name`` set to ``value``."""

    def change(graph):
        from onnx import helper

        attributes = graph.node[0].attribute
        for kept in [a for a in attributes if a.name == name]:
            attributes.remove(kept)
        attributes.append(helper.make_attribute(name, value))

    return change


@pytest.mark.parametrize(
    "change, keywords, pattern",
    [
        (add_attribute, {}, r"unknown LSTM attributes \['mystery'\]"),
        (duplicate_node, {}, r"2 LSTM nodes .*; pass node_name="),
        (lambda g: None, {"node_name": "other"}, r"no LSTM node named 'other'"),
        (lambda g: g.node.pop(0), {}, r"the graph has no LSTM node \(operators: \['Concat'\]\)"),
        (lambda g: g.initializer.pop(0), {}, r"W \('W_l0'\) is neither an initializer nor given"),
        (
            lambda g: g.node[0].input.__setitem__(3, "R_l0"),
            {},
            r"B expected shape \[D, 8H\] = \(1, 32\), got \(1, 16, 4\)",
        ),
        (set_attribute("direction", "sideways"), {}, r"unknown direction 'sideways'"),
        (
            set_attribute("direction", "bidirectional"),
            {},
            r"direction 'bidirectional' with W \(1, 16, 3\) and R \(1, 16, 4\); expected W "
            r"\[2, 4H, I\]",
        ),
        (set_attribute("hidden_size", 5), {}, r"hidden_size 5 but R is \(1, 16, 4\)"),
        (
            lambda g: g.node[0].input.__setitem__(2, ""),
            {},
            r"W \[D, 4H, I\] and R \[D, 4H, H\] are required",
        ),
    ],
)
def test_from_onnx_errors(change, keywords, pattern):
    with pytest.raises(ValueError, match=pattern):
        ln.from_onnx(edited_onnx(change), **keywords)


def test_from_onnx_reads_bytes_and_names_what_it_cannot_read(tmp_path):
    pytest.importorskip("onnx")
    model = ln.LSTM(4, 5, batch_first=False, seed=4)
    loaded = ln.from_onnx(to_onnx(model).SerializeToString())
    assert_same_model(loaded, model, float_attributes_in_float32=True)
    with pytest.raises(ValueError, match=r"model: the bytes given are not an ONNX model"):
        ln.from_onnx(b"garbage")
    (tmp_path / "garbage.onnx").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"model: .*garbage.onnx is not an ONNX model"):
        ln.from_onnx(tmp_path / "garbage.onnx")
    with pytest.raises(
        TypeError, match=r"model: expected a path, bytes or an onnx.ModelProto, got"
    ):
        ln.from_onnx(3)


def test_from_onnx_of_external_data_reads_the_path_and_names_the_file_else(tmp_path):
    """A model saved with its weights in a file of their own (ONNX external data, as for models
    over 2 GB): read by path or ``onnx.load``, and from its bytes or a ``ModelProto`` loaded
    without its data the error names the data's file and what to pass (onnx's own message, "not
    regular file", named neither)."""
    onnx = pytest.importorskip("onnx")
    from onnx.external_data_helper import convert_model_to_external_data

    model = ln.LSTM(4, 5, num_layers=2, seed=2)
    exported = to_onnx(model)
    convert_model_to_external_data(exported, location="weights.bin", size_threshold=0)
    path = tmp_path / "m.onnx"
    onnx.save(exported, path)
    assert_same_model(ln.from_onnx(path), model, float_attributes_in_float32=True)
    assert_same_model(ln.from_onnx(onnx.load(path)), model, float_attributes_in_float32=True)
    for given in (path.read_bytes(), onnx.load(path, load_external_data=False)):
        with pytest.raises(ValueError, match=r"initializer 'W_l0' keeps its data in 'weights.bin'"):
            ln.from_onnx(given)


def test_torch_to_file_to_onnx_shapes_agree(rng, tmp_path):
    """torch → lstm_numba → save → load → ONNX-shaped I/O and ONNX Runtime: one answer."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    module = torch.nn.LSTM(4, 5, bidirectional=True)
    ln.from_torch(module).save(tmp_path / "m.npz")
    model = ln.load(tmp_path / "m.npz")
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)
    with torch.no_grad():
        y_t, (h_t, c_t) = module(torch.from_numpy(x))
    y, h_n, c_n = model.run_onnx_io(x)
    assert_close(y.transpose(0, 2, 1, 3).reshape(6, 2, 10), y_t.numpy())
    assert_close(h_n, h_t.numpy())
    session = ort.InferenceSession(to_onnx(model).SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    zeros = np.zeros((2, 2, 5), np.float32)
    y_o, h_o, c_o = session.run(None, {"X": x, "initial_h": zeros, "initial_c": zeros})
    assert_close(y, y_o)
    assert_close(c_n, c_o)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_torch_onnx_export_of_a_stack_reads_back(rng, bidirectional):
    """``torch.onnx.export`` of a two-layer ``nn.LSTM`` (bytes, one node a layer, a transpose and
    a reshape between them, or for one direction a squeeze): ``from_onnx`` stacks them into one
    model, with the nodes' names or without."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    module = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=bidirectional)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    exported = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on exporting RNNs with a batch of 3
        torch.onnx.export(module, (torch.from_numpy(x),), exported, dynamo=False)
    graph = onnx.load_from_string(exported.getvalue()).graph
    names = [node.name for node in graph.node if node.op_type == "LSTM"]
    model = ln.from_onnx(exported.getvalue(), node_name=names)
    assert_same_model(ln.from_onnx(exported.getvalue()), model)
    with torch.no_grad():
        y_t, (h_t, c_t) = module(torch.from_numpy(x))
    y, (h_n, c_n) = model(x)
    assert len(names) == 2 and model.num_layers == 2 and model.bidirectional == bidirectional
    assert_close(y, y_t.numpy())
    assert_close(h_n, h_t.numpy())
    assert_close(c_n, c_t.numpy())


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_onnx_export_of_batch_first_reads_batch_first(rng, dynamo):
    """torch exports ``nn.LSTM(batch_first=True)`` as its time-major node after a transpose of
    the (B, T, I) input: ``from_onnx`` gives a batch-first model whose call is the graph's (read
    as the node's, a batch-first x was read as (T, B, I) without an error); ``batch_first=False``
    gives the node's."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    module = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on exporting RNNs with a batch of 3
        if dynamo:
            exported = torch.onnx.export(module, (torch.from_numpy(x),), dynamo=True).model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(module, (torch.from_numpy(x),), buffer, dynamo=False)
            exported = onnx.load_from_string(buffer.getvalue())
    model = ln.from_onnx(exported)
    assert model.batch_first
    session = ort.InferenceSession(exported.SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    expected = session.run(None, {session.get_inputs()[0].name: x})
    y, (h_n, c_n) = model(x)
    for ours, theirs in zip((y, h_n, c_n), expected, strict=True):
        assert_close(ours, theirs)
    time_major = ln.from_onnx(exported, batch_first=False)
    assert not time_major.batch_first
    assert_close(time_major(x.transpose(1, 0, 2))[0], y.transpose(1, 0, 2))


# --- save / load --------------------------------------------------------------------------------

NO_SAFETENSORS = importlib.util.find_spec("safetensors") is None
FORMATS = [
    "npz",
    pytest.param("safetensors", marks=pytest.mark.skipif(NO_SAFETENSORS, reason="not installed")),
]


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_save_load_is_bit_identical(rng, tmp_path, suffix, options):
    model = ln.LSTM(4, 6, **options, seed=7)
    model.save(tmp_path / f"m.{suffix}")
    loaded = ln.load(tmp_path / f"m.{suffix}")
    assert_same_model(loaded, model)
    x = random_input(rng, model)
    np.testing.assert_array_equal(loaded(x)[0], model(x)[0])


def test_npz_weights_serve_from_state_dict(tmp_path):
    model = ln.LSTM(3, 4, num_layers=2, seed=8)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as archive:
        weights = {k: archive[k] for k in archive.files if not k.startswith("__")}
    assert_same_model(ln.from_state_dict(weights), model)


@pytest.mark.parametrize(
    "module, call",
    [
        ("onnx", lambda model, path: ln.to_onnx(model)),
        ("onnx", lambda model, path: ln.from_onnx(path / "m.onnx")),
        ("safetensors", lambda model, path: model.save(path / "m.safetensors")),
        ("safetensors", lambda model, path: ln.load(path / "m.safetensors")),
    ],
)
def test_a_missing_optional_package_names_its_extra(monkeypatch, tmp_path, module, call):
    (tmp_path / "m.safetensors").write_bytes(b"")
    for name in (module, f"{module}.numpy"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it fails
    with pytest.raises(ImportError, match=rf"{module} is not installed; .*lstm-numba\[{module}\]"):
        call(ln.LSTM(3, 4), tmp_path)


def test_save_needs_a_known_extension(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected a name ending in .npz or .safetensors"):
        ln.LSTM(3, 4).save(tmp_path / "m.pt")
    model = ln.LSTM(3, 4, seed=2)
    model.save(tmp_path / "m.NPZ")  # in any case, under the name given (np.savez adds .npz)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.NPZ"]
    assert_same_model(ln.load(tmp_path / "m.NPZ"), model)


class Exploit:
    """Unpickling this would create a file: the proof that a loader executed code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_bad_file(kind, path, marker):
    model = ln.LSTM(3, 4, seed=9)
    model.save(path)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00not a model" * 10)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(Exploit(marker)))
    elif kind == "pickled member":
        weights = model.state_dict()
        np.savez(path, **weights, __lstm_numba_config__=np.array([Exploit(marker)], object))
    elif kind == "wrong shape":
        model2 = ln.LSTM(3, 5)
        weights = model2.state_dict()
        with np.load(path) as archive:
            config = archive["__lstm_numba_config__"]
        np.savez(path, **weights, __lstm_numba_config__=config)
    elif kind == "missing key":
        with np.load(path) as archive:
            arrays = {k: archive[k] for k in archive.files if k != "bias_hh_l0"}
        np.savez(path, **arrays)
    elif kind == "no config":
        np.savez(path, **model.state_dict())
    elif kind == "one array":  # np.save's .npy format under the archive's name
        with open(path, "wb") as file:
            np.save(file, model.state_dict()["weight_hh_l0"])
    elif kind == "bad config":
        np.savez(
            path, **model.state_dict(), __lstm_numba_config__=np.frombuffer(b"{oops", np.uint8)
        )


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("truncated", r"not a readable .npz archive \(not a zip file"),
        ("garbage", r"not a readable .npz archive \(not a zip file"),
        ("pickle", r"not a readable .npz archive \(not a zip file"),
        ("pickled member", r"not a readable .npz archive \(.*allow_pickle"),
        ("wrong shape", r"not a valid lstm_numba model .*weight_hh_l0: expected shape"),
        ("missing key", r"not a valid lstm_numba model .*missing key 'bias_hh_l0'"),
        ("no config", r"no lstm_numba configuration .*from_state_dict\(np.load\(path\), batch_"),
        ("one array", r"not a readable .npz archive \(a single array, not an .npz archive\)"),
        ("bad config", r"not a valid lstm_numba model"),
    ],
)
def test_bad_npz_files_are_clear_errors_and_never_run_code(tmp_path, kind, pattern):
    path, marker = tmp_path / "m.npz", tmp_path / "exploited"
    write_bad_file(kind, path, marker)
    with pytest.raises(ValueError, match=pattern) as error:
        ln.load(path)
    assert str(path) in str(error.value)
    assert not marker.exists(), "loading executed code from the file"


def test_bare_safetensors_weights_name_their_reader(tmp_path):
    """Weights saved without the configuration (``safetensors.numpy.save_file(state_dict)``):
    ``load`` names the call that reads them, which does."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    model = ln.LSTM(3, 4, seed=2)
    safetensors_numpy.save_file(model.state_dict(), tmp_path / "bare.safetensors")
    reader = r"from_state_dict\(safetensors.numpy.load_file\(path\), batch_first=...\)"
    with pytest.raises(ValueError, match=rf"no lstm_numba configuration .*{reader}"):
        ln.load(tmp_path / "bare.safetensors")
    weights = safetensors_numpy.load_file(tmp_path / "bare.safetensors")
    assert_same_model(ln.from_state_dict(weights), model)


def test_files_of_other_formats_name_their_reader(tmp_path):
    """A file ``load`` cannot read, named as another library's, says which call reads it: an
    ONNX model (no zip), a torch file (a zip without the configuration)."""
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(ValueError, match=r"not a zip file.*; an ONNX model\? read it with lstm"):
        ln.load(tmp_path / "m.onnx")
    with open(tmp_path / "m.pt", "wb") as file:
        np.savez(file, weight=np.zeros(3))
    with pytest.raises(ValueError, match=r"no lstm_numba configuration .*; a torch file\?"):
        ln.load(tmp_path / "m.pt")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_missing_file_is_python_s_own_error(tmp_path, suffix):
    with pytest.raises(FileNotFoundError, match="No such file"):
        ln.load(tmp_path / f"absent{suffix}")


@pytest.mark.skipif(NO_SAFETENSORS, reason="safetensors is not installed")
@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_bad_safetensors_files_are_clear_errors(tmp_path, kind):
    path = tmp_path / "m.safetensors"
    write_bad_file(kind, path, tmp_path / "exploited")
    with pytest.raises(ValueError, match=r"m.safetensors: not a readable .safetensors file"):
        ln.load(path)
