"""``LSTM.freeze``: a read-only copy of a model whose CPU forwards pack W_hh once
(``cpu.KeptPanels``) and plan as if packing were free."""

import copy
import pickle
import threading

import numpy as np
import pytest
from conftest import assert_close, threads_at_any_size
from test_warm_up import compiled_signatures

import lstm_numba as ln
from lstm_numba import cpu, reference

# (B, T) of calls that take each plan at these sizes, on the threads or not: one row over one
# step to many (BLAS, the one-row tile, the units split), two to five rows over few steps and
# many (the units split, unpacked or packed), more rows (the dot tile or the panels, the batch
# split)
CALLS = [(1, 1), (1, 5), (1, 70), (2, 3), (3, 20), (4, 2), (5, 17), (8, 1), (9, 40)]


@pytest.mark.parametrize("threads", [False, True], ids=["sizes", "threads"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"dtype": np.float64},
        {"num_layers": 2, "batch_first": False},
        {"bidirectional": True},
        {"proj_size": 24},
    ],
    ids=["plain", "float64", "stacked", "bidirectional", "lstmp"],
)
def test_a_frozen_model_matches_the_reference_on_every_plan(rng, monkeypatch, options, threads):
    """Every call twice (the second reads the panels the first packed), each against the float64
    reference, with initial states and lengths as well; the two calls agree bit for bit."""
    if threads:
        threads_at_any_size(monkeypatch)
    model = ln.LSTM(20, 48, seed=7, **options)
    frozen = model.freeze()
    states = model.num_layers * model.num_directions
    for batch, steps in CALLS:
        shape = (batch, steps, 20) if model.batch_first else (steps, batch, 20)
        x = rng.standard_normal(shape).astype(model.dtype)
        hx = (
            rng.standard_normal((states, batch, model.output_size)).astype(model.dtype),
            rng.standard_normal((states, batch, 48)).astype(model.dtype),
        )
        lengths = rng.integers(1, steps + 1, batch)
        for arguments in ((x,), (x, hx), (x, hx, lengths)):
            expected_y, (expected_h, expected_c) = reference.model_forward(model, *arguments)
            first = frozen(*arguments)
            y, (h_n, c_n) = frozen(*arguments)
            for got, expected in ((y, expected_y), (h_n, expected_h), (c_n, expected_c)):
                assert_close(got, expected)
            for again, once in zip((y, h_n, c_n), (first[0], *first[1]), strict=True):
                np.testing.assert_array_equal(again, once)
    assert frozen._kept_panels  # something was packed, and kept


def test_w_hh_is_packed_once(rng, monkeypatch):
    """W_hh's panels are packed on a frozen model's first call that reads them packed, and the
    units split's parts' panels on its first split call (its kernel told so by
    ``panels_packed``); a model that is not frozen packs on every call."""
    threads_at_any_size(monkeypatch)
    monkeypatch.setattr(cpu, "forward_threads", lambda: 2)  # the units split on one core too
    packed, told = [], []
    pack_panels, split = cpu.pack_panels, cpu.lstm_unit_split_forward

    def counting_pack_panels(w_hh):
        packed.append(w_hh.shape)
        return pack_panels(w_hh)

    def noting_split(*arguments):
        told.append(bool(arguments[6]))  # panels_packed
        return split(*arguments)

    monkeypatch.setattr(cpu, "pack_panels", counting_pack_panels)
    monkeypatch.setattr(cpu, "lstm_unit_split_forward", noting_split)
    model = ln.LSTM(8, 32, seed=2)
    rows = rng.standard_normal((9, 30, 8)).astype(np.float32)
    row = rng.standard_normal((1, 30, 8)).astype(np.float32)
    for _ in range(3):
        model(rows)
        model(row)
    assert len(packed) == 3 and told == [False] * 3
    packed.clear(), told.clear()
    frozen = model.freeze()
    for _ in range(3):
        frozen(rows)
        frozen(row)
    assert packed == [(1, 128, 32)] and told == [False, True, True]
    y_rows, y_row = frozen(rows)[0], frozen(row)[0]
    for _, panels in frozen._kept_panels.values():  # the later calls read these, pack nothing
        for array in panels if isinstance(panels, tuple) else (panels,):  # the units split's
            array[...] = 0
    assert not np.allclose(frozen(rows)[0], y_rows) and not np.allclose(frozen(row)[0], y_row)


def test_w_ih_is_packed_for_few_rows(rng, monkeypatch):
    """A frozen model's projections of a few rows read W_ih packed too (the register tile), on
    the row worker (``cpu.input_projection``) and in the units split, packed once: zeroed, the
    result changes."""
    threads_at_any_size(monkeypatch)
    monkeypatch.setattr(cpu, "forward_threads", lambda: 2)  # the units split on one core too
    model = ln.LSTM(8, 32, seed=5).freeze()
    for batch, split in ((8, False), (2, True)):
        x = rng.standard_normal((batch, 1, 8)).astype(np.float32)
        hx = tuple(rng.standard_normal((1, batch, 32)).astype(np.float32) for _ in range(2))
        model._kept_panels.clear()
        y, _ = model(x, hx)
        assert_close(y, reference.model_forward(model, x, hx)[0])
        np.testing.assert_array_equal(model(x, hx)[0], y)
        kept = model._kept_panels.values()  # (weights, panels)
        if split:  # the parts' panels of W_hh and of W_ih (I = 8 deep)
            (w_ih_panels,) = [panels[1] for _, panels in kept if isinstance(panels, tuple)]
            assert w_ih_panels.shape[2] == 8
        else:  # W_ih's, (4H, I) of one direction
            (w_ih_panels,) = [panels for weights, panels in kept if weights.shape == (1, 128, 8)]
        w_ih_panels[...] = 0
        assert not np.allclose(model(x, hx)[0], y)


def test_a_frozen_model_s_weights_cannot_change(rng, tmp_path):
    """Writing into a weight, assigning one and ``load_state_dict`` raise, naming the cause; the
    model frozen from is not frozen, and changing it leaves the frozen copy as it was."""
    model = ln.LSTM(6, 10, num_layers=2, peepholes=True, seed=1)
    frozen = model.freeze()
    assert frozen.frozen and not model.frozen and frozen.freeze() is frozen
    x = rng.standard_normal((3, 9, 6)).astype(np.float32)
    y, _ = frozen(x)
    with pytest.raises(ValueError, match="read-only"):
        frozen.weight_hh_l1[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        frozen.peephole_l0[0] = 1.0
    with pytest.raises(AttributeError, match=r"weight_hh_l0: this model is frozen \(model\.freeze"):
        frozen.weight_hh_l0 = model.weight_hh_l0
    with pytest.raises(ValueError, match="load_state_dict: this model is frozen"):
        frozen.load_state_dict(model.state_dict())
    model.weight_hh_l0[0, 0] += 1.0
    model.bias_ih_l1 = model.bias_ih_l1 + 1.0
    np.testing.assert_array_equal(frozen(x)[0], y)
    assert_close(model.freeze()(x)[0], reference.model_forward(model, x)[0])
    weights = frozen.state_dict()  # copies, writable
    assert all(array.flags.writeable for array in weights.values())
    frozen.save(tmp_path / "frozen.npz")
    loaded = ln.load(tmp_path / "frozen.npz")
    assert not loaded.frozen
    for name, array in loaded.state_dict().items():
        np.testing.assert_array_equal(array, weights[name])
    np.testing.assert_array_equal(loaded.freeze()(x)[0], y)


@pytest.mark.parametrize(
    "duplicate",
    [copy.deepcopy, lambda model: pickle.loads(pickle.dumps(model))],
    ids=["deepcopy", "pickle"],
)
def test_a_copied_model_reads_its_own_weights(rng, duplicate):
    """A deep copy or an unpickled model: a weight changed in place changes the forward (its
    views were copies of their own, which the forward did not read); frozen, it is frozen
    still, read-only, and packs its own panels."""
    model = ln.LSTM(6, 64, peepholes=True, seed=2)
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    copied = duplicate(model)
    y = copied(x)[0]
    np.testing.assert_array_equal(y, model(x)[0])
    copied.weight_hh_l0[0, 0] += 1.0
    copied.peephole_l0[0] += 1.0
    assert not np.allclose(copied(x)[0], y)
    assert_close(copied(x)[0], reference.model_forward(copied, x)[0])
    frozen = model.freeze()
    y = frozen(x)[0]
    copied = duplicate(frozen)
    assert copied.frozen and not copied.weight_hh_l0.flags.writeable and not copied._kept_panels
    np.testing.assert_array_equal(copied(x)[0], y)
    assert copied._kept_panels


def test_python_threads_share_frozen_models(rng):
    """Calls from several Python threads at once, on two frozen models of one shape (the packed
    weights of each its own) and on one not frozen: every result as its model's reference."""
    models = [ln.LSTM(32, 96, seed=seed) for seed in (1, 2)]
    models = [models[0].freeze(), models[1].freeze(), models[1]]
    calls = []
    for batch, steps in [(1, 1), (1, 80), (2, 3), (3, 20), (8, 1), (9, 40), (5, 17)]:
        x = rng.standard_normal((batch, steps, 32)).astype(np.float32)
        hx = tuple(rng.standard_normal((1, batch, 96)).astype(np.float32) for _ in range(2))
        calls.append((x, hx, [reference.model_forward(m, x, hx)[0] for m in models]))
    start, failures = threading.Barrier(2 * len(models)), []

    def run(which):
        start.wait()
        for x, hx, expected in calls * 3:
            try:
                assert_close(models[which](x, hx)[0], expected[which])
            except AssertionError as error:
                failures.append(error)

    threads = [threading.Thread(target=run, args=(k % len(models),)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]


def test_a_frozen_model_streams(rng):
    """A ``Stream`` of a frozen model: one-step chunks and longer ones equal one call."""
    model = ln.LSTM(12, 40, num_layers=2, seed=4).freeze()
    x = rng.standard_normal((3, 25, 12)).astype(np.float32)
    stream = model.stream(3)
    chunks = [stream.step(x[:, t])[:, None] for t in range(5)]
    chunks += [stream.step(x[:, 5:17]), stream.step(x[:, 17:])]
    assert_close(np.concatenate(chunks, axis=1), reference.model_forward(model, x)[0])


def test_after_warm_up_no_call_of_a_frozen_model_compiles(rng):
    """``warm_up`` plans a frozen model's calls as the calls do (packed over fewer steps), and
    packs its W_hh on the way."""
    model = ln.LSTM(24, 96, seed=3).freeze()
    assert model.warm_up() > 0 and model._kept_panels
    before = compiled_signatures()
    for batch, steps in [(1, 1), (1, 7), (2, 3), (3, 17), (5, 9), (6, 2), (9, 130), (1, 300)]:
        x = rng.standard_normal((batch, steps, 24)).astype(np.float32)
        model(x)
        model(x, lengths=rng.integers(1, steps + 1, batch))
    after = compiled_signatures()
    compiled = {name: count - before[name] for name, count in after.items() if count > before[name]}
    assert not compiled, compiled
