"""The full LSTM (layers, directions, lengths, projection, ONNX options) against its oracles:
``lstm_numba.reference`` always, ONNX Runtime and ``torch.nn.LSTM`` where installed."""

import numpy as np
import pytest
from conftest import allocation_peak, assert_close, threads_at_any_size

import lstm_numba as ln
from lstm_numba import cpu, reference
from lstm_numba.convert import to_onnx

ONNX_OPTIONS = [
    {},
    {"peepholes": True},
    {"clip": 0.4},
    {"input_forget": True},
    {"activations": ("hard_sigmoid", "relu", "tanh")},
    {
        "activations": ("HardSigmoid", "LeakyRelu", "ScaledTanh"),
        "activation_alpha": (0.3, 0.05, 0.9),
        "activation_beta": (0.45, 1.3),
    },
    {
        "bidirectional": True,
        "activations": ("sigmoid", "tanh", "tanh", "hardsigmoid", "elu", "softsign"),
    },
    {"bidirectional": True, "peepholes": True, "clip": 1.5, "input_forget": True},
    {"reverse": True},
    {"reverse": True, "peepholes": True, "activations": ("sigmoid", "relu", "tanh")},
]


def assert_forward_matches_reference(model, x, hx=None, lengths=None, **call_options):
    y, (h_n, c_n) = model(x, hx, lengths=lengths, **call_options)
    y_ref, (h_ref, c_ref) = reference.model_forward(model, x, hx, lengths)
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)
    return y, (h_n, c_n)


def random_inputs(rng, model, batch, steps, states=True):
    """x in the model's layout and, when ``states``, random (h0, c0)."""
    shape = (batch, steps) if model.batch_first else (steps, batch)
    x = rng.standard_normal((*shape, model.input_size)).astype(model.dtype)
    if not states:
        return x, None
    k = model.num_layers * model.num_directions
    h0 = rng.standard_normal((k, batch, model.output_size)).astype(model.dtype)
    c0 = rng.standard_normal((k, batch, model.hidden_size)).astype(model.dtype)
    return x, (h0, c0)


@pytest.mark.parametrize("case", range(24))
def test_random_configurations_match_reference(case, monkeypatch):
    """Random combinations of every feature, shape and option; half of them on threads."""
    if case % 4 >= 2:
        threads_at_any_size(monkeypatch)
    rng = np.random.default_rng(1000 + case)
    hidden = int(rng.integers(1, 20))
    model = ln.LSTM(
        int(rng.integers(1, 10)),
        hidden,
        num_layers=int(rng.integers(1, 4)),
        bias=bool(rng.random() < 0.8),
        batch_first=bool(rng.random() < 0.5),
        bidirectional=(bidirectional := bool(rng.random() < 0.5)),
        reverse=not bidirectional and rng.random() < 0.3,
        proj_size=int(rng.integers(1, hidden)) if hidden > 1 and rng.random() < 0.4 else 0,
        dtype=(np.float32, np.float64)[case % 2],
        seed=case,
        peepholes=bool(rng.random() < 0.3),
        clip=[None, 0.5, 3.0][int(rng.integers(3))],
        input_forget=bool(rng.random() < 0.2),
        activations=[("sigmoid", "tanh", "tanh"), ("hardsigmoid", "relu", "tanh")][
            int(rng.random() < 0.25)
        ],
    )
    batch, steps = int(rng.integers(1, 12)), int(rng.integers(1, 15))
    x, hx = random_inputs(rng, model, batch, steps, states=bool(rng.random() < 0.6))
    lengths = [None, rng.integers(0, steps + 1, batch)][case % 3 != 0]
    assert_forward_matches_reference(model, x, hx, lengths)


BIDIRECTIONAL_IN_PLACE = [
    {},
    {"batch_first": False},  # in turn in groups: x (y) holds more rows than a group's states
    {"proj_size": 3, "batch_first": False},
    {"activations": ("sigmoid", "tanh", "tanh", "hardsigmoid", "elu", "softsign")},
    {"peepholes": True, "clip": 1.5, "dtype": np.float64},
]


@pytest.mark.parametrize("batch", [1, 3, 7])
@pytest.mark.parametrize("options", BIDIRECTIONAL_IN_PLACE)
@pytest.mark.parametrize("threads", [True, False], ids=["threads", "calling-thread"])
@pytest.mark.parametrize("mode", [cpu.IN_TURN, cpu.IN_HALVES])
def test_bidirectional_layers_in_place_match_reference(rng, batch, options, threads, mode,
                                                       monkeypatch):  # fmt: skip
    """Layers of two directions after the first run on the layer below's output in place, taken
    here whatever the size: in turn (``LSTM._run_directions_in_turn``: the forward direction into
    an array of its own, the reverse one over its input; in groups of rows read and written
    where they are in y, each group's lengths its own, both layouts) or in halves of time
    (``cpu.lstm_directions_in_halves``), each direction with its own weights, states, cell
    (activations that differ by direction) and columns; rows of several lengths out of order,
    the rows or the units split over threads or not; the gate traces (each direction at its own
    index) as side by side. (Several projection chunks:
    ``test_layers_in_place_over_several_projection_chunks``.)"""
    if threads:
        threads_at_any_size(monkeypatch)
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: mode)
    monkeypatch.setattr(cpu, "IN_TURN_GROUP_MIN_ROWS", 2)  # in turn, 7 rows in 3 groups
    in_place = []
    owner, name = ln.LSTM, "_run_directions_in_turn"
    if mode == cpu.IN_HALVES:
        owner, name = cpu, "lstm_directions_in_halves"
    run = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a: in_place.append(1) or run(*a))
    model = ln.LSTM(5, 6, num_layers=3, bidirectional=True, seed=rng.integers(9), **options)
    x, hx = random_inputs(rng, model, batch, 11)
    lengths = rng.permutation(np.linspace(5, 11, batch).astype(np.int64))
    given = x.copy()
    assert_forward_matches_reference(model, x, hx, lengths)
    assert_forward_matches_reference(model, x, hx)
    np.testing.assert_array_equal(x, given)  # in place on y, never on the caller's x
    gates = model(x, hx, lengths=lengths, return_gates=True)[2]
    assert len(in_place) == 6  # layers 1 and 2, three calls
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: None)
    side_by_side = model(x, hx, lengths=lengths, return_gates=True)[2]
    assert len(in_place) == 6
    for expected, actual in zip(side_by_side, gates, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)  # NaN past lengths


@pytest.mark.parametrize("batch, batch_first", [(1, True), (1, False), (4, False), (4, True)])
@pytest.mark.parametrize("steps", [11, 12, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bidirectional_layers_in_halves_match_reference(rng, batch, batch_first, steps, dtype,
                                                         monkeypatch):  # fmt: skip
    """Layers of two directions after the first side by side in halves of time, on the layer
    below's output in place (``cpu.lstm_directions_in_halves``, taken here whatever the size):
    odd and even T, rows of lengths below, around and above the middle step and 0; the peak
    holds half of y beyond y, where side by side held all of it."""
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: cpu.IN_HALVES)
    halves = []
    run = cpu.lstm_directions_in_halves
    monkeypatch.setattr(cpu, "lstm_directions_in_halves", lambda *a: halves.append(1) or run(*a))
    model = ln.LSTM(5, 6, 3, bidirectional=True, batch_first=batch_first, dtype=dtype, seed=7)
    x, hx = random_inputs(rng, model, batch, steps)
    given = x.copy()
    assert_forward_matches_reference(model, x, hx)
    lengths = rng.permutation(np.array([steps, steps // 2, steps // 2 + 1, 0])[:batch])
    assert_forward_matches_reference(model, x, hx, lengths)
    np.testing.assert_array_equal(x, given)
    assert len(halves) == 4  # layers 1 and 2, twice
    long = random_inputs(rng, model, batch, 60000, states=False)[0]  # the thread: ≈ 0.1 MB
    peaks = {}
    for mode in (cpu.IN_HALVES, None):
        monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments, mode=mode: mode)
        model(long)
        (y, _), peaks[mode] = allocation_peak(model, long)
    # half of y less, but for the second thread's few KB (its executor, workspace)
    assert peaks[cpu.IN_HALVES] < peaks[None] - 0.45 * y.nbytes, peaks


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("options", BIDIRECTIONAL_IN_PLACE)
def test_bidirectional_layers_recomputed_match_reference(rng, batch, options, monkeypatch):
    """With ``low_memory``, few rows' layers of two directions after the first recompute part of
    the forward direction (``cpu.lstm_directions_recomputed``, taken here whatever the size): the
    reverse direction's pending steps U from none to most of T (11), windows of 2 steps (the
    last one shorter where A = T − U is odd); rows of lengths below, around and above A and 0;
    both layouts, LSTMP, each direction's own cell. The traces of a call with the gates are side
    by side's (``low_memory`` ignored there)."""
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: cpu.IN_HALVES)
    monkeypatch.setattr(cpu, "LOW_MEMORY_SHARE", 0)  # half of y over the budget (weights)
    recomputed = []
    run = cpu.lstm_directions_recomputed
    monkeypatch.setattr(
        cpu, "lstm_directions_recomputed", lambda *a: recomputed.append(a[-2]) or run(*a)
    )
    model = ln.LSTM(5, 6, num_layers=3, bidirectional=True, seed=rng.integers(9), **options)
    x, hx = random_inputs(rng, model, batch, 11)
    lengths = rng.permutation(np.array([11, 0, 5, 7])[:batch])
    given = x.copy()
    for pending in (0, 1, 4, 5, 10):
        monkeypatch.setattr(cpu, "recompute_plan", lambda *arguments, u=pending: (u, 2))
        assert_forward_matches_reference(model, x, hx, low_memory=True)
        assert_forward_matches_reference(model, x, hx, lengths, low_memory=True)
    np.testing.assert_array_equal(x, given)
    assert recomputed == [u for u in (0, 1, 4, 5, 10) for _ in range(4)]
    gates = model(x, hx, lengths=lengths, return_gates=True, low_memory=True)[2]
    assert len(recomputed) == 20
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: None)
    side_by_side = model(x, hx, lengths=lengths, return_gates=True)[2]
    for expected, actual in zip(side_by_side, gates, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)  # NaN past lengths


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("mode", [cpu.IN_TURN, cpu.IN_HALVES, cpu.RECOMPUTED])
def test_layers_in_place_over_several_projection_chunks(rng, batch, mode, monkeypatch):
    """The layers of two directions run in place over sequences of several projection chunks
    (``cpu.projection_steps``: 256 steps a row at most): each chunk's inputs are copied before
    its steps overwrite y there, in turn, in halves of time and recomputed (windows of 300
    steps, each of two chunks or more), rows of lengths out of order. The chunk's bounds are
    compiled into the kernels, so the sequences are long rather than the bounds patched: a
    kernel compiled under a patch would serve later tests from the tests' Numba cache."""
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: mode)
    if mode == cpu.RECOMPUTED:
        monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: cpu.IN_HALVES)
        monkeypatch.setattr(cpu, "LOW_MEMORY_SHARE", 0)  # half of y over the budget (weights)
        monkeypatch.setattr(cpu, "recompute_plan", lambda *arguments: (250, 300))
    owner, name = {
        cpu.IN_TURN: (ln.LSTM, "_run_directions_in_turn"),
        cpu.IN_HALVES: (cpu, "lstm_directions_in_halves"),
        cpu.RECOMPUTED: (cpu, "lstm_directions_recomputed"),
    }[mode]
    run, ran = getattr(owner, name), []
    monkeypatch.setattr(owner, name, lambda *a: ran.append(1) or run(*a))
    steps = 601
    assert cpu.projection_steps(1, steps) < steps // 2  # several chunks, even for one row
    model = ln.LSTM(3, 4, num_layers=2, bidirectional=True, seed=rng.integers(9))
    x, hx = random_inputs(rng, model, batch, steps)
    lengths = rng.permutation(np.array([steps, 300, 555])[:batch])
    for given in (None, lengths):
        assert_forward_matches_reference(model, x, hx, given, low_memory=mode == cpu.RECOMPUTED)
    assert len(ran) == 2  # the second layer, each call


@pytest.mark.parametrize(
    "batch, steps, inputs, hidden",
    [(1, 6000, 64, 64), (2, 12000, 8, 64), (8, 1500, 64, 64), (16, 1000, 64, 64)],
)
@pytest.mark.parametrize("batch_first", [True, False])
def test_low_memory_peak_within_the_budget(rng, batch, steps, inputs, hidden, batch_first):
    """``low_memory``: a stack of two directions peaks within 1.2 × x + y + weights (the issue's
    bound: ``cpu.LOW_MEMORY_SHARE`` of that beyond y for the directions' outputs and the
    workspaces, a margin for the rest), where by default it holds half of y beyond y (or all
    of it, side by side below ``cpu.DIRECTIONS_IN_PLACE_MIN_BYTES``): with a small or a large
    input, few rows (part of the forward direction recomputed) or more (recomputed, or in turn
    in groups of fewer rows: 16 rows in three groups of six instead of two of eight, the threads
    permitting); y as the reference's."""
    model = ln.LSTM(inputs, hidden, 3, bidirectional=True, batch_first=batch_first, seed=2)
    x = random_inputs(rng, model, batch, steps, states=False)[0]
    lengths = rng.integers(steps // 2, steps + 1, batch)
    weights = sum(array.nbytes for array in model.state_dict().values())
    peaks = {}
    for low_memory in (False, True):
        model(x, lengths=lengths, low_memory=low_memory)  # compiled
        (y, _), peaks[low_memory] = allocation_peak(
            model, x, lengths=lengths, low_memory=low_memory
        )
        y_ref, _ = reference.model_forward(model, x, None, lengths)
        assert_close(y, y_ref)
    ratios = {k: (x.nbytes + weights + peak) / (x.nbytes + y.nbytes + weights)
              for k, peak in peaks.items()}  # fmt: skip
    assert ratios[True] <= 1.2 < ratios[False], ratios


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "lengths",
    [[0, 0, 0], [5, 5, 5], [3, 3, 3], [0, 5, 2], [1, 0, 5]],
    ids=["all-zero", "all-full", "all-equal-short", "mixed", "with-zero"],
)
def test_lengths(rng, dtype, lengths):
    model = ln.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
    x, hx = random_inputs(rng, model, 3, 5)
    y, (h_n, c_n) = assert_forward_matches_reference(model, x, hx, np.array(lengths))
    for row, length in enumerate(lengths):
        assert not np.any(y[row, length:]), "outputs past a length are zero"
        if length == 0:
            np.testing.assert_array_equal(h_n[:, row], hx[0][:, row])
            np.testing.assert_array_equal(c_n[:, row], hx[1][:, row])
    # Lengths equal to T are the same call as no lengths.
    full = model(x, hx, lengths=np.full(3, 5, np.int32))
    np.testing.assert_array_equal(full[0], model(x, hx)[0])


def test_padding_does_not_change_a_sequence(rng):
    """A sequence padded with garbage past its length gives its unpadded results."""
    model = ln.LSTM(3, 5, num_layers=2, bidirectional=True, seed=4)
    x, _ = random_inputs(rng, model, 2, 9, states=False)
    y, (h_n, c_n) = model(x, lengths=[4, 9])
    y_alone, (h_alone, c_alone) = model(x[:1, :4])
    np.testing.assert_allclose(y[0, :4], y_alone[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h_n[:, 0], h_alone[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(c_n[:, 0], c_alone[:, 0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch, steps", [(1, 1), (1, 7), (6, 1)])
@pytest.mark.parametrize("options", [{}, {"bidirectional": True, "num_layers": 2, "proj_size": 2}])
def test_edge_shapes(rng, batch, steps, options):
    model = ln.LSTM(3, 4, **options, seed=5)
    x, hx = random_inputs(rng, model, batch, steps)
    assert_forward_matches_reference(model, x, hx, rng.integers(0, steps + 1, batch))


@pytest.mark.parametrize("options", ONNX_OPTIONS[1:])
def test_unbatched_with_options(rng, options):
    model = ln.LSTM(3, 4, num_layers=2, **options, seed=6)
    x, hx = random_inputs(rng, model, 1, 6)
    y, (h_n, c_n) = model(x[0], (hx[0][:, 0], hx[1][:, 0]))
    y_batched, (h_batched, c_batched) = model(x, hx)
    np.testing.assert_array_equal(y, y_batched[0])
    np.testing.assert_array_equal(h_n, h_batched[:, 0])
    np.testing.assert_array_equal(c_n, c_batched[:, 0])


def test_layers_feed_each_other(rng):
    """A 2-layer model equals two 1-layer models, the second fed the first's y."""
    model = ln.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=7)
    first = ln.LSTM(3, 5, bidirectional=True, proj_size=2)
    second = ln.LSTM(4, 5, bidirectional=True, proj_size=2)
    weights = model.state_dict()
    for target, layer in ((first, "l0"), (second, "l1")):
        target.load_state_dict(
            {
                name.replace(layer, "l0"): value
                for name, value in weights.items()
                if f"_{layer}" in name
            }
        )
    x, (h0, c0) = random_inputs(rng, model, 3, 6)
    y, (h_n, c_n) = model(x, (h0, c0))
    y_first, (h_first, c_first) = first(x, (h0[:2], c0[:2]))
    y_second, (h_second, c_second) = second(y_first, (h0[2:], c0[2:]))
    np.testing.assert_array_equal(y, y_second)
    np.testing.assert_array_equal(h_n, np.concatenate([h_first, h_second]))
    np.testing.assert_array_equal(c_n, np.concatenate([c_first, c_second]))


def test_reference_forward_is_the_seed(rng):
    """The general reference, one step of a standard cell, is the seed's ``lstm_step``."""
    model = ln.LSTM(4, 6, dtype=np.float64, seed=8)
    x, (h0, c0) = random_inputs(rng, model, 3, 1)
    y, (h_n, c_n) = reference.model_forward(model, x, (h0, c0))
    h_seed, c_seed = reference.lstm_step(h0[0], c0[0], x[:, 0], **model.gate_weights())
    np.testing.assert_allclose(h_n[0], h_seed, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(c_n[0], c_seed, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(y[:, 0], h_seed, rtol=1e-14, atol=1e-15)


def test_reference_onnx_options_by_hand(rng):
    """The reference's peepholes, clip and input_forget, one step, written out for one unit."""
    model = ln.LSTM(2, 1, peepholes=True, clip=0.25, input_forget=True, dtype=np.float64, seed=9)
    x, (h0, c0) = random_inputs(rng, model, 1, 1)
    w = model.state_dict()
    z = w["weight_ih_l0"] @ x[0, 0] + w["weight_hh_l0"] @ h0[0, 0] + w["bias_ih_l0"]
    z += w["bias_hh_l0"]
    p_i, p_o, _ = w["peephole_l0"]
    c_prev = c0[0, 0, 0]
    i = 1 / (1 + np.exp(-np.clip(z[0] + p_i * c_prev, -0.25, 0.25)))
    c = (1 - i) * c_prev + i * np.tanh(np.clip(z[2], -0.25, 0.25))
    o = 1 / (1 + np.exp(-np.clip(z[3] + p_o * c, -0.25, 0.25)))
    _, (h_n, c_n) = reference.model_forward(model, x, (h0, c0))
    np.testing.assert_allclose(c_n[0, 0, 0], c, rtol=1e-14)
    np.testing.assert_allclose(h_n[0, 0, 0], o * np.tanh(c), rtol=1e-14)


@pytest.mark.parametrize("name", sorted(reference.ACTIVATIONS))
def test_every_activation_matches_reference(rng, name):
    model = ln.LSTM(3, 4, activations=("sigmoid", name, name), dtype=np.float64, seed=10)
    x, hx = random_inputs(rng, model, 2, 4)
    assert_forward_matches_reference(model, x, hx)


# --- ONNX Runtime -------------------------------------------------------------------------------


def onnx_runtime_forward(model, x, h0, c0, lengths=None):
    """``model`` exported by ``to_onnx`` and run by ONNX Runtime; (Y, Y_h, Y_c) in ONNX's shapes.
    h0 and c0 None: exported without ``initial_states``, X alone fed."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    states = h0 is not None
    onnx_model = to_onnx(model, sequence_lens=lengths is not None, initial_states=states)
    onnx.checker.check_model(onnx_model)
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert [given.name for given in session.get_inputs()][1:3] == (
        ["initial_h", "initial_c"] if states else ["sequence_lens"] * (lengths is not None)
    )
    feed = {"X": x, "initial_h": h0, "initial_c": c0} if states else {"X": x}
    if lengths is not None:
        feed["sequence_lens"] = np.asarray(lengths, np.int32)
    return session.run(None, feed)


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("options", ONNX_OPTIONS)
def test_matches_onnx_runtime(rng, options, with_lengths):
    model = ln.LSTM(5, 7, batch_first=False, **options, seed=11)
    batch, steps = 4, 6
    x, (h0, c0) = random_inputs(rng, model, batch, steps)
    # ONNX Runtime gives zeros, not the initial state, for a length of 0: lengths start at 1.
    lengths = rng.integers(1, steps + 1, batch) if with_lengths else None
    y_onnx, h_onnx, c_onnx = onnx_runtime_forward(model, x, h0, c0, lengths)
    y, (h_n, c_n) = model(x, (h0, c0), lengths=lengths)
    # ONNX's Y is (T, D, B, H); ours (T, B, D·H).
    assert_close(y, y_onnx.transpose(0, 2, 1, 3).reshape(y.shape))
    assert_close(h_n, h_onnx)
    assert_close(c_n, c_onnx)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("initial_states", [True, False])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_stacked_layers_match_onnx_runtime(rng, num_layers, initial_states, batch_first):
    """Batch-first, the graph takes x (B, T, I) and gives y (B, T, D·H), as the model."""
    model = ln.LSTM(3, 5, num_layers, bidirectional=True, batch_first=batch_first, seed=12)
    x, (h0, c0) = random_inputs(rng, model, 3, 8)
    hx = (h0, c0) if initial_states else (None, None)
    lengths = np.array([8, 2, 5])
    y_onnx, h_onnx, c_onnx = onnx_runtime_forward(model, x, *hx, lengths)
    y, (h_n, c_n) = model(x, hx if initial_states else None, lengths=lengths)
    assert_close(y, y_onnx if batch_first else y_onnx.transpose(0, 2, 1, 3).reshape(y.shape))
    assert_close(h_n, h_onnx)
    assert_close(c_n, c_onnx)


def test_projection_has_no_onnx_export():
    with pytest.raises(ValueError, match="proj_size"):
        to_onnx(ln.LSTM(3, 4, proj_size=2))


@pytest.mark.parametrize("num_layers, oldest", [(1, 7), (2, 10)])
def test_onnx_export_opsets(rng, num_layers, oldest):
    """The oldest opset a model can be written in runs in ONNX Runtime; older ones, newer than
    the installed onnx knows, and a path where the opset goes are errors naming ``opset``."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = ln.LSTM(3, 4, num_layers=num_layers, batch_first=False, seed=2)
    x, (h0, c0) = random_inputs(rng, model, 2, 5)
    onnx_model = to_onnx(model, np.int64(oldest))
    assert onnx_model.opset_import[0].version == oldest
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    _, h_onnx, c_onnx = session.run(None, {"X": x, "initial_h": h0, "initial_c": c0})
    _, (h_n, c_n) = model(x, (h0, c0))
    assert_close(h_n, h_onnx)
    assert_close(c_n, c_onnx)
    newest = onnx.defs.onnx_opset_version()
    for opset in (oldest - 1, newest + 1):
        with pytest.raises(ValueError, match=rf"opset: expected {oldest} <= opset <= {newest}"):
            to_onnx(model, opset)
    with pytest.raises(TypeError, match=r"opset: .*'lstm.onnx'.*onnx.save"):
        to_onnx(model, "lstm.onnx")
    with pytest.raises(TypeError, match="opset: expected an integer"):
        to_onnx(model, 14.0)


# --- PyTorch --------------------------------------------------------------------------------------


TORCH_CONFIGURATIONS = [
    {"num_layers": 2},
    {"bidirectional": True},
    {"num_layers": 3, "bidirectional": True, "batch_first": False},
    {"proj_size": 3},
    {"num_layers": 2, "bidirectional": True, "proj_size": 2, "bias": False},
    {"num_layers": 2, "bidirectional": True, "dtype": np.float64},
]


@pytest.mark.parametrize("options", TORCH_CONFIGURATIONS)
def test_matches_torch(rng, options):
    torch = pytest.importorskip("torch")
    model = ln.LSTM(4, 6, **options, seed=13)
    x, (h0, c0) = random_inputs(rng, model, 5, 7)
    with torch.no_grad():
        y_t, (h_t, c_t) = ln.to_torch(model)(
            torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0))
        )
    y, (h_n, c_n) = model(x, (h0, c0))
    assert_close(y, y_t.numpy())
    assert_close(h_n, h_t.numpy())
    assert_close(c_n, c_t.numpy())


@pytest.mark.parametrize("options", TORCH_CONFIGURATIONS)
def test_lengths_match_torch_packed_sequences(rng, options):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    model = ln.LSTM(4, 6, **options, seed=14)
    steps = 7
    x, (h0, c0) = random_inputs(rng, model, 5, steps)
    lengths = np.array([3, 7, 1, 5, 3])  # PyTorch rejects 0
    packed = pack_padded_sequence(
        torch.from_numpy(x),
        torch.from_numpy(lengths),
        batch_first=model.batch_first,
        enforce_sorted=False,
    )
    with torch.no_grad():
        y_packed, (h_t, c_t) = ln.to_torch(model)(
            packed, (torch.from_numpy(h0), torch.from_numpy(c0))
        )
    y_t, _ = pad_packed_sequence(y_packed, batch_first=model.batch_first, total_length=steps)
    y, (h_n, c_n) = model(x, (h0, c0), lengths=lengths)
    assert_close(y, y_t.numpy())
    assert_close(h_n, h_t.numpy())
    assert_close(c_n, c_t.numpy())
    y_packed_here, (h_here, c_here) = model(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
    assert type(y_packed_here).__name__ == "PackedSequence"
    for name in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(y_packed_here, name), getattr(y_packed, name)), name
    assert_close(y_packed_here.data.numpy(), y_packed.data.numpy())
    assert_close(h_here.numpy(), h_t.numpy())
    assert_close(c_here.numpy(), c_t.numpy())


def test_packed_sequence_in_packed_sequence_out(rng):
    """A ``PackedSequence`` of unsorted sequences, with gate traces, as ``torch.nn.LSTM`` reads
    it; ``lengths`` beside it is an error."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_sequence

    model = ln.LSTM(3, 4, batch_first=False, seed=15)
    sequences = [
        torch.from_numpy(rng.standard_normal((n, 3)).astype(np.float32)) for n in (4, 6, 1)
    ]
    packed = pack_sequence(sequences, enforce_sorted=False)
    with torch.no_grad():
        y_t, (h_t, c_t) = ln.to_torch(model)(packed)
    y, (h_n, c_n), gates = model(packed, return_gates=True)
    assert_close(y.data.numpy(), y_t.data.numpy())
    assert_close(h_n.numpy(), h_t.numpy())
    assert_close(c_n.numpy(), c_t.numpy())
    for row, sequence in enumerate(sequences):  # each row's traces end at its own last step
        assert_close(gates.cell[0, row, len(sequence) - 1].numpy(), c_t[0, row].numpy())
    with pytest.raises(ValueError, match=r"lengths: a PackedSequence x carries its own"):
        model(packed, lengths=[4, 6, 1])
    in_order = pack_sequence(sorted(sequences, key=len, reverse=True))  # no sorted_indices
    assert model(in_order)[0].sorted_indices is None


# --- Bad input ----------------------------------------------------------------------------------


def bidirectional_2_layers():
    return ln.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)


X = np.zeros((2, 5, 4), np.float32)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda m: m(X, (np.zeros((4, 2, 3), np.float32),)), ValueError, r"hx: .*of length 1"),
        (
            lambda m: m(X, (np.zeros((2, 2, 3), np.float32), np.zeros((4, 2, 6), np.float32))),
            ValueError,
            r"h0: expected shape \(D·num_layers, B, H_out\) = \(4, 2, 3\), got \(2, 2, 3\)",
        ),
        (
            lambda m: m(X, (np.zeros((4, 2, 3), np.float32), np.zeros((4, 2, 3), np.float32))),
            ValueError,
            r"c0: expected shape \(D·num_layers, B, H\) = \(4, 2, 6\), got \(4, 2, 3\)",
        ),
        (lambda m: m(X, lengths=[5]), ValueError, r"lengths: expected shape \(B,\) = \(2,\)"),
        (lambda m: m(X, lengths=[[5, 5]]), ValueError, r"lengths: expected shape \(B,\)"),
        (lambda m: m(X, lengths=[5.0, 2.0]), TypeError, r"lengths: expected an integer array"),
        (lambda m: m(X, lengths=[5, -1]), ValueError, r"lengths\[1\] = -1"),
        (lambda m: m(X, lengths=[6, 2]), ValueError, r"0 <= length <= T = 5 .* lengths\[0\] = 6"),
        (lambda m: m(X[0], lengths=[5]), ValueError, r"lengths: only for batched input"),
    ],
)
def test_bad_call_is_a_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(bidirectional_2_layers())


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"num_layers": 0}, ValueError, r"num_layers: expected a positive integer, got 0"),
        ({"proj_size": 4}, ValueError, r"proj_size: expected less than hidden_size = 4, got 4"),
        ({"proj_size": -1}, ValueError, r"proj_size: expected a non-negative integer"),
        ({"clip": 0}, ValueError, r"clip: expected a positive number or None, got 0"),
        ({"reverse": True, "bidirectional": True}, ValueError, r"reverse: only for a unidir"),
        ({"clip": "1"}, ValueError, r"clip: expected a positive number"),
        ({"seed": -1}, ValueError, r"seed: expected None, a non-negative integer .*got -1"),
        ({"seed": "1"}, TypeError, r"seed: expected None, a non-negative integer .*got '1'"),
        ({"activations": ("sigmoid", "tanh")}, ValueError, r"activations: expected 3 names"),
        ({"activations": "sigmoid"}, ValueError, r"activations: expected 3 names"),
        ({"activations": None}, ValueError, r"activations: expected 3 names .*got None"),
        (
            {"activations": ("hardsigmoid", "tanh", "tanh"), "activation_alpha": ("a",)},
            TypeError,
            r"activation_alpha: expected a sequence of numbers, got \('a',\)",
        ),
        (
            {"activations": ("hardsigmoid", "tanh", "tanh"), "activation_beta": (np.nan,)},
            ValueError,
            r"activation_beta: expected finite numbers",
        ),
        (
            {"activations": ("sigmoid", "gelu", "tanh")},
            ValueError,
            r"activations: unknown activation 'gelu'; expected one of sigmoid, tanh, relu",
        ),
        (
            {"activations": ("sigmoid", "tanh", "tanh"), "activation_alpha": (0.5,)},
            ValueError,
            r"activation_alpha/activation_beta: more values than the activations .* take",
        ),
        (
            {"bidirectional": True, "activations": ("sigmoid",) * 4},
            ValueError,
            r"expected 3 names \(f, g, h\) or 6 \(forward, then reverse\)",
        ),
    ],
)
def test_bad_options_are_a_clear_error(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ln.LSTM(3, 4, **kwargs)


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    model = bidirectional_2_layers()
    before = model.state_dict()
    weights = model.state_dict()
    del weights["weight_hh_l1_reverse"]
    weights["weight_hr_l0"] = np.zeros((6, 3), np.float32)
    weights["bias_ih_l7"] = np.zeros(24, np.float32)
    weights["weight_ih_l1"] = np.ones_like(weights["weight_ih_l1"])[:, :3]
    with pytest.raises(ValueError) as error:
        model.load_state_dict(weights)
    message = str(error.value)
    assert "missing key 'weight_hh_l1_reverse'" in message
    assert "unexpected key 'bias_ih_l7'" in message
    assert "weight_hr_l0: expected shape (H_out, H) = (3, 6), got (6, 3)" in message
    assert "weight_ih_l1: expected shape (4H, D·H_out) = (24, 6), got (24, 3)" in message
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_load_state_dict_not_strict_loads_the_keys_it_has():
    """``strict=False``: the keys the model has are loaded, the others reported as PyTorch does;
    a wrong shape among them is still an error and loads nothing."""
    model = bidirectional_2_layers()
    before = model.state_dict()
    biases = {name: value + 1 for name, value in before.items() if name.startswith("bias_")}
    result = model.load_state_dict({**biases, "head.weight": np.zeros(3)}, strict=False)
    assert result.unexpected_keys == ["head.weight"]
    assert result.missing_keys == [name for name in before if name not in biases]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, biases.get(name, before[name]), err_msg=name)
    assert model.load_state_dict(before) == ([], [])
    with pytest.raises(ValueError, match=r"weight_hh_l0: expected shape"):
        model.load_state_dict({**biases, "weight_hh_l0": np.zeros((2, 2))}, strict=False)
    np.testing.assert_array_equal(model.bias_ih_l0, before["bias_ih_l0"])


def test_state_dict_names_cover_every_layer_and_direction():
    model = ln.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, peepholes=True)
    names = set(model.state_dict())
    for layer in range(2):
        for suffix in ("", "_reverse"):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "peephole"):
                assert f"{kind}_l{layer}{suffix}" in names
    assert len(names) == 24
    assert model.state_dict()["weight_ih_l1"].shape == (20, 4)
    assert model.state_dict()["peephole_l1_reverse"].shape == (15,)


def test_torch_cpu_tensors_in_torch_tensors_out(rng):
    """A torch user passes CPU tensors and gets tensors back (zero-copy views of the results), as
    CUDA tensors give CUDA tensors."""
    torch = pytest.importorskip("torch")
    model = ln.LSTM(4, 3, num_layers=2, seed=13)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 3)).astype(np.float32)
    c0 = rng.standard_normal((2, 2, 3)).astype(np.float32)
    expected = model(x, (h0, c0))
    y, (h_n, c_n), gates = model(
        torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)), return_gates=True
    )
    for actual, want in zip((y, h_n, c_n), (expected[0], *expected[1]), strict=True):
        assert isinstance(actual, torch.Tensor) and actual.dtype == torch.float32
        np.testing.assert_array_equal(actual.numpy(), want)
    assert all(isinstance(trace, torch.Tensor) for trace in gates)
    y_one, (h_one, _) = model(torch.from_numpy(x[0]))  # unbatched
    assert isinstance(y_one, torch.Tensor) and y_one.shape == (5, 3) and h_one.shape == (2, 3)
    stream = model.stream(2)
    chunk = stream.step(torch.from_numpy(x[:, :2]))
    assert isinstance(chunk, torch.Tensor)
    np.testing.assert_array_equal(chunk.numpy(), model(x[:, :2])[0])
