"""Streaming: chunked calls equal one call on the whole sequence."""

import contextlib
import copy
import pickle
import threading

import numpy as np
import pytest
from conftest import assert_close, threads_at_any_size

import lstm_numba as ln
from lstm_numba import cpu, reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_layers": 3, "batch_first": False},
        {"num_layers": 2, "proj_size": 2, "peepholes": True, "clip": 1.0},
    ],
)
def test_chunks_equal_one_call(rng, dtype, options):
    model = ln.LSTM(3, 5, **options, dtype=dtype, seed=1)
    steps, batch = 23, 4
    x = rng.standard_normal((batch, steps, 3)).astype(dtype)
    if not model.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    y, (h_n, c_n) = model(x)
    cuts = np.sort(rng.choice(np.arange(1, steps), size=6, replace=False))
    stream = model.stream(batch)
    time_axis = 1 if model.batch_first else 0
    pieces = [stream.step(chunk) for chunk in np.split(x, cuts, axis=time_axis)]
    assert_close(np.concatenate(pieces, axis=time_axis), y)
    h, c = stream.state
    assert_close(h, h_n)
    assert_close(c, c_n)


def test_one_step_chunks_and_gates(rng):
    model = ln.LSTM(3, 4, num_layers=2, seed=2)
    x = rng.standard_normal((2, 7, 3)).astype(np.float32)
    y, _, gates = model(x, return_gates=True)
    stream = model.stream(2)
    outputs = [stream.step(x[:, t : t + 1], return_gates=True) for t in range(7)]
    assert_close(np.concatenate([o[0] for o in outputs], axis=1), y)
    cells = np.concatenate([o[1].cell for o in outputs], axis=2)
    assert_close(cells, gates.cell)


def test_stream_from_a_state(rng):
    """``model.stream(B, hx)`` continues from a call's state (the given arrays left as they
    are), as one call over the whole sequence does; states of other shapes are errors."""
    model = ln.LSTM(3, 4, num_layers=2, proj_size=2, seed=4)
    x = rng.standard_normal((3, 9, 3)).astype(np.float32)
    y, (h_n, c_n) = model(x)
    _, hx = model(x[:, :4])
    given = [state.copy() for state in hx]
    stream = model.stream(3, hx)
    assert_close(stream.step(x[:, 4:]), y[:, 4:])
    assert_close(stream.state[0], h_n)
    assert_close(stream.state[1], c_n)
    np.testing.assert_array_equal(hx[0], given[0])
    np.testing.assert_array_equal(hx[1], given[1])
    with pytest.raises(
        ValueError, match=r"h0: expected shape \(D·num_layers, B, H_out\) = \(2, 2, 2\)"
    ):
        model.stream(2, hx)
    with pytest.raises(TypeError, match=r"c0: expected dtype float32, got float64"):
        model.stream(3, (hx[0], hx[1].astype(np.float64)))


@pytest.mark.parametrize("rows", [[1], np.array([False, True, False])])
def test_reset_restarts_only_the_given_rows(rng, rows):
    """Rows by index or by a boolean mask (the rows whose sequences ended)."""
    model = ln.LSTM(3, 4, seed=3)
    x = rng.standard_normal((3, 10, 3)).astype(np.float32)
    stream = model.stream(3)
    assert repr(stream) == f"Stream({model!r}, batch_size=3)"
    stream.step(x[:, :6])
    stream.reset(rows=rows)
    y = stream.step(x[:, 6:])
    assert_close(y[1], model(x[1:2, 6:])[0][0])  # row 1 starts afresh
    assert_close(y[[0, 2]], model(x[[0, 2]])[0][:, 6:])  # the others carry on
    with pytest.raises(TypeError, match=r"rows: .* a boolean mask of shape \(B,\) = \(3,\)"):
        stream.reset([True, False])
    stream.reset()
    assert not np.any(stream.state[0]) and not np.any(stream.state[1])


@pytest.mark.parametrize("batch_first", [True, False])
def test_chunks_with_lengths_equal_each_row_s_own_sequence(rng, batch_first):
    """Rows whose data arrive at different rates: each chunk's first lengths[b] steps of row b
    (0 to t; 0 sits the chunk out) carry its state on, as one call on those steps would."""
    model = ln.LSTM(3, 5, num_layers=2, batch_first=batch_first, seed=4)
    batch, steps = 3, 4
    stream = model.stream(batch)
    sequences = [[] for _ in range(batch)]  # each row's steps so far, (I,) each
    for lengths in ([4, 0, 2], [1, 4, 0], [0, 3, 4], [2, 2, 1]):
        chunk = rng.standard_normal((batch, steps, 3)).astype(np.float32)
        y = stream.step(chunk if batch_first else chunk.transpose(1, 0, 2), lengths=lengths)
        y = y if batch_first else y.transpose(1, 0, 2)
        h, c = stream.state
        for b, length in enumerate(lengths):
            sequences[b].extend(chunk[b, :length])
            if not sequences[b]:
                assert not np.any(h[:, b]) and not np.any(c[:, b])
                continue
            whole = np.array(sequences[b])[None] if batch_first else np.array(sequences[b])[:, None]
            y_row, (h_row, c_row) = model(whole)
            y_row = y_row[0] if batch_first else y_row[:, 0]
            assert_close(y[b, :length], y_row[len(sequences[b]) - length :])
            assert not np.any(y[b, length:])
            assert_close(h[:, b], h_row[:, 0])
            assert_close(c[:, b], c_row[:, 0])
    with pytest.raises(ValueError, match=r"lengths: expected 0 <= length <= T = 4"):
        stream.step(np.zeros((batch, steps, 3), np.float32) if batch_first else
                    np.zeros((steps, batch, 3), np.float32), lengths=[5, 0, 0])  # fmt: skip


@pytest.mark.parametrize("batch_first", [True, False])
def test_one_step_chunks_of_shape_b_i(rng, batch_first):
    """A step as ``torch.nn.LSTMCell`` takes it, (B, I) (NumPy, a list, a torch tensor): y (B,
    H_out) and the gates (L, B, H), one call's steps in turn; lengths of 0 or 1 too."""
    model = ln.LSTM(3, 4, num_layers=2, proj_size=2, batch_first=batch_first, seed=5)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    y, _, gates = model(x if batch_first else x.transpose(1, 0, 2), return_gates=True)
    y = y if batch_first else y.transpose(1, 0, 2)
    stream = model.stream(2)
    np.testing.assert_array_equal(stream.step(x[:, 0]), y[:, 0])
    assert_close(stream.step(x[:, 1].tolist()), y[:, 1])
    step_y, step_gates = stream.step(x[:, 2], return_gates=True)
    assert step_y.shape == (2, 2) and step_gates.cell.shape == (2, 2, 4)
    assert_close(step_y, y[:, 2])
    assert_close(step_gates.cell, gates.cell[:, :, 2])
    held = stream.step(x[:, 3], lengths=[0, 1])  # row 0 has no data this step
    assert_close(held[1], y[1, 3])
    assert not np.any(held[0])
    torch = pytest.importorskip("torch")
    assert torch.is_tensor(stream.step(torch.from_numpy(x[:, 0])))


def test_state_is_a_copy():
    stream = ln.LSTM(3, 4).stream(2)
    h, c = stream.state
    h += 1
    assert not np.any(stream.state[0])


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda s: s.step(np.zeros((3, 2, 3), np.float32)), ValueError, r"with B = 2 \(or one"),
        (
            lambda s: s.step(np.zeros((3, 3), np.float32)),
            ValueError,
            r"chunk: expected one step \(B, I\) = \(2, 3\), or \(B, t, I\); got shape \(3, 3\)",
        ),
        (lambda s: s.step(np.zeros(3, np.float32)), ValueError, r"with B = 2 .*got shape \(3,\)"),
        (lambda s: s.step(np.zeros((2, 2, 5), np.float32)), ValueError, r"with I = 3 and t >= 1"),
        (lambda s: s.step(np.zeros((2, 0, 3), np.float32)), ValueError, r"with I = 3 and t >= 1"),
        (lambda s: s.step(np.zeros((2, 2, 3))), TypeError, r"chunk: expected dtype float32"),
        (lambda s: s.reset(rows=[2]), ValueError, r"rows: expected indices in \[0, 2\)"),
        (lambda s: s.reset(rows=[0.5]), TypeError, r"rows: expected integer row indices"),
    ],
)
def test_bad_stream_calls(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(ln.LSTM(3, 4).stream(2))


@pytest.mark.parametrize("options", [{"bidirectional": True}, {"reverse": True}])
def test_only_forward_models_stream(options):
    with pytest.raises(ValueError, match="stream: a bidirectional or reverse LSTM"):
        ln.LSTM(3, 4, **options).stream(1)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
        ln.LSTM(3, 4).stream(0)


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "not_frozen"])
@pytest.mark.parametrize("threads", [False, True], ids=["sizes", "threads"])
@pytest.mark.parametrize(
    "options",
    [{}, {"num_layers": 2, "batch_first": False}, {"proj_size": 16}, {"peepholes": True}],
    ids=["plain", "stacked", "lstmp", "peepholes"],
)
def test_a_stream_replays_its_kernel_calls(rng, monkeypatch, options, threads, frozen):
    """A ``Stream`` replays the kernel calls of its first chunk of a shape, or the second where
    a frozen model's first packed the units split's panels (``cpu.Replay``): chunks of several
    shapes in turn, one not C-contiguous, a reset between, on the rows' plans and the units
    split, a model frozen or not, equal the same stream without replays bit for bit and the
    reference within float32's rounding; the planned forward runs no more once a shape
    replays."""
    if threads:
        threads_at_any_size(monkeypatch)
    model = ln.LSTM(20, 40, seed=5, **options)
    model = model.freeze() if frozen else model
    planned = []
    layer_forward = cpu.lstm_layer_forward
    monkeypatch.setattr(
        cpu, "lstm_layer_forward", lambda *a, **k: planned.append(1) or layer_forward(*a, **k)
    )
    split, unit_split_forward = [], cpu._unit_split_forward
    monkeypatch.setattr(
        cpu, "_unit_split_forward", lambda *a: split.append(1) or unit_split_forward(*a)
    )
    time_axis = 1 if model.batch_first else 0
    cuts = [1, 2, 3, 7, 8, 9, 13, 14, 15, 16, 17, 21]  # chunks of 1 and 4 steps, then 1
    for batch in (1, 3, 8):
        shape = (batch, 24, 20) if model.batch_first else (24, batch, 20)
        x = rng.standard_normal(shape).astype(np.float32)
        chunks = np.split(x, cuts, axis=time_axis)
        chunks[4] = np.asfortranarray(chunks[4])
        outputs = []
        for replays in (ln.model.MOST_REPLAYS, 0):
            monkeypatch.setattr(ln.model, "MOST_REPLAYS", replays)
            stream, ys, ran = model.stream(batch), [], []
            for k, chunk in enumerate(chunks):
                if k == 9:
                    stream.reset()
                before = len(planned)
                ys.append(stream.step(chunk))
                ran.append(len(planned) > before)  # the planned forward ran, not a replay
            outputs.append((np.concatenate(ys, axis=time_axis), *stream.state))
            entries = stream._replays._entries
            replayed = {key[0] for key, replay in entries.items() if replay is not None}
            # every shape replays on a frozen model; not frozen, where its plan packs W_hh for
            # the call (one row over few steps does not)
            assert len(replayed) == 3 if frozen and replays else replays or not replayed
            assert replayed or not replays or batch > 1
            for shape in replayed:  # the second chunk records where the first packed
                runs = [run for run, chunk in zip(ran, chunks, strict=True) if chunk.shape == shape]
                assert runs[0] and not any(runs[2:]), (shape, runs)
            assert replays or all(ran)
        for replayed, planned_again in zip(*outputs, strict=True):
            np.testing.assert_array_equal(replayed, planned_again)
        restart = sum(chunk.shape[time_axis] for chunk in chunks[:9])
        later = x[:, restart:] if model.batch_first else x[restart:]
        expected = reference.model_forward(model, later)[0]
        assert_close(outputs[0][0][:, restart:] if model.batch_first else outputs[0][0][restart:],
                     expected)  # fmt: skip
    seed_cell = not (model.proj_size or model.peepholes)
    assert bool(split) == (threads and seed_cell)  # the units split's replays were tested too


def test_a_replay_refuses_views_of_x_and_y(rng):
    """``cpu.Replay.of`` replays only calls whose arguments are x, y or arrays of their own: a
    view of x or y would keep reading the recorded call's."""
    x, y = np.zeros((2, 3, 4)), np.zeros((2, 3, 5))

    def fill(x, y, scale):
        y[...] = scale * x.sum()

    taping = cpu.Recording()
    taping.note(fill, (x, y, 2.0), contextlib.nullcontext)
    replay = cpu.Replay.of(taping, x, y)
    np.testing.assert_array_equal(replay(np.ones_like(x)), np.full(y.shape, 48.0))
    for view in (x[0], y[:, 1:]):
        taping = cpu.Recording()
        taping.note(fill, (x, y, view), contextlib.nullcontext)
        assert cpu.Replay.of(taping, x, y) is None
    taping = cpu.Recording()
    taping.note(fill, (x, y, 2.0), None)  # a call that is more than the kernel's
    assert cpu.Replay.of(taping, x, y) is None


@pytest.mark.parametrize("threads", [False, True], ids=["sizes", "threads"])
@pytest.mark.parametrize("options", [{}, {"peepholes": True}], ids=["plain", "peepholes"])
def test_a_replayed_chunk_reads_the_weights_as_they_are_now(rng, monkeypatch, options, threads):
    """A model's weights change in place only (an element, an attribute, ``load_state_dict``):
    a replayed chunk reads them where the kernels read them and adds the bias sum again, so
    that it equals a chunk planned anew, bit for bit, after every kind of change (one row on
    the calling thread; two rows split by units on the threads)."""
    if threads:
        threads_at_any_size(monkeypatch)
    model = ln.LSTM(12, 48, seed=2, **options)
    batch = 2 if threads else 1
    replaying, planning = model.stream(batch), model.stream(batch)
    changes = [
        lambda: model.weight_hh_l0.__imul__(0.9),
        lambda: model.weight_ih_l0.__setitem__((0, 0), 3.0),
        lambda: setattr(model, "bias_hh_l0", rng.standard_normal(4 * 48).astype(np.float32)),
        lambda: model.load_state_dict({"bias_ih_l0": np.ones(4 * 48, np.float32)}, strict=False),
    ]
    if model.peepholes:
        changes.append(lambda: model.peephole_l0.__iadd__(0.5))
    for change in [lambda: None, lambda: None, *changes]:
        change()
        chunk = rng.standard_normal((batch, 1, 12)).astype(np.float32)
        replayed = replaying.step(chunk)
        monkeypatch.setattr(ln.model, "MOST_REPLAYS", 0)
        planned = planning.step(chunk)
        monkeypatch.setattr(ln.model, "MOST_REPLAYS", 16)
        np.testing.assert_array_equal(replayed, planned)
    assert any(replaying._replays._entries.values())  # the chunks after the first replayed


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))])
def test_a_copied_stream_records_its_own_replays(rng, duplicate):
    """A copy of a stream that replays (deep copy, pickle) goes on from the same state on its own
    copies of the model and the states, as the original does, its state and its model's weight
    edits included: its replays, whose arguments are the original's arrays, are not copied."""
    model = ln.LSTM(8, 24, num_layers=2, seed=6)
    x = rng.standard_normal((2, 9, 8)).astype(np.float32)
    stream = model.stream(2)
    for t in range(4):
        stream.step(x[:, t])
    twin = duplicate(stream)
    assert stream._replays._entries and not twin._replays._entries
    for each in (stream, twin):
        each.model.weight_hh_l1[...] *= 0.5
    ours = [stream.step(x[:, t]) for t in range(4, 9)]
    theirs = [twin.step(x[:, t]) for t in range(4, 9)]
    np.testing.assert_array_equal(np.stack(ours, 1), np.stack(theirs, 1))
    for mine, copied in zip(stream.state, twin.state, strict=True):
        np.testing.assert_array_equal(mine, copied)


@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("frozen", [False, True], ids=["not_frozen", "frozen"])
def test_a_model_s_calls_replay_in_each_python_thread(rng, monkeypatch, frozen, directions):
    """``model(x, hx)`` without gates, every row of length T, replays the kernel calls of its
    first call of x's shape in the Python thread (``model.ThreadReplays``), on states of the
    replay's own: calls with and without states, unbatched, with lengths, weights changed in
    place between, equal calls planned anew bit for bit and return fresh arrays; Python threads
    calling one model at once each get the reference's results."""
    model = ln.LSTM(10, 40, num_layers=2, bidirectional=directions == 2, seed=8)
    model = model.freeze() if frozen else model
    twin = copy.deepcopy(model)  # its calls planned anew, every one
    x = rng.standard_normal((3, 2, 10)).astype(np.float32)
    hx = tuple(rng.standard_normal((2 * directions, 3, 40)).astype(np.float32) for _ in "hc")
    unbatched = (x[0], tuple(state[:, 0] for state in hx))
    calls = [(x, hx), (x, None), unbatched, (x, hx, np.full(3, 2))]  # lengths, all of T
    results = []
    for k, arguments in enumerate(calls * 3):
        if k == 6 and not frozen:
            for each in (model, twin):
                each.weight_hh_l1[...] *= 0.5
                each.bias_ih_l0 = np.ones(160, np.float32)
        replayed = model(*arguments)
        monkeypatch.setattr(ln.model, "MOST_REPLAYS", 0)
        planned = twin(*arguments)
        monkeypatch.setattr(ln.model, "MOST_REPLAYS", 16)
        for got, expected in zip(
            (replayed[0], *replayed[1]), (planned[0], *planned[1]), strict=True
        ):  # fmt: skip
            np.testing.assert_array_equal(got, expected)
        results.append(replayed)
    entries = model._replays.here()._entries
    assert sum(entry is not None for entry in entries.values()) == 2  # (3, 2, 10), (1, 2, 10)
    assert not twin._replays.here()._entries
    assert not np.shares_memory(results[-1][1][0], results[-5][1][0])  # fresh states each call
    inputs = [rng.standard_normal((3, 2, 10)).astype(np.float32) for _ in range(4)]
    expected = [reference.model_forward(model, each, hx)[0] for each in inputs]
    start, failures = threading.Barrier(4), []

    def run(which):
        start.wait()
        for _ in range(20):
            try:
                assert_close(model(inputs[which], hx)[0], expected[which])
            except AssertionError as error:
                failures.append(error)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]


@pytest.mark.parametrize(
    ("batch", "threads", "in_place"),
    [(1, False, cpu.RECOMPUTED), (8, False, cpu.IN_TURN), (3, True, cpu.IN_HALVES)],
)
def test_two_directions_in_place_are_not_replayed(rng, monkeypatch, batch, threads, in_place):
    """A stack of two directions whose later layers run on y in place (``low_memory``, here
    with room for in turn and in halves of time) copies a direction's output into y outside the
    kernels, which a replay would not (``cpu.note_moved``): its calls plan anew, every one, and
    equal the reference; without ``low_memory`` the same model's calls replay, to the same y
    (frozen: several rows' panels kept)."""
    if threads:
        threads_at_any_size(monkeypatch)
    monkeypatch.setattr(cpu, "LOW_MEMORY_SHARE", 100.0)
    model = ln.LSTM(6, 16, num_layers=2, bidirectional=True, seed=3).freeze()
    plans, plan = [], model._directions_in_place
    monkeypatch.setattr(
        model, "_directions_in_place", lambda *a: plans.append(plan(*a)) or plans[-1]
    )
    x = rng.standard_normal((batch, 40, 6)).astype(np.float32)
    expected = reference.model_forward(model, x)[0]
    for low_memory in (True, False):
        for _ in range(3):
            assert_close(model(x, low_memory=low_memory)[0], expected)
    assert plans[0][0] == in_place and plans[-1][0] is None
    entries = model._replays.here()._entries
    assert [entry is not None for entry in entries.values()] == [False, True]
