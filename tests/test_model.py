"""``LSTM``: forward against the float64 reference, PyTorch and ONNX Runtime; weights; bad input."""

import ast
import inspect
import json
import os
import pathlib
import pickle
import sys

import numpy as np
import pytest
from conftest import allocation_peak, assert_close, run_python, threads_at_any_size
from numba import get_num_threads
from numba.core import types

import lstm_numba as ln
from lstm_numba import cpu, reference, register_tile
from lstm_numba.register_tile import panel_count, panel_width

DTYPES = [np.float32, np.float64]
SHAPES = [  # (B, T, I, H)
    (1, 1, 1, 1),
    (1, 37, 5, 3),
    (3, 9, 4, 16),
    (16, 70, 8, 12),  # 70 steps cross a projection chunk boundary at B = 16
    (2, 700, 3, 5),  # several chunks at small B
    (33, 5, 17, 65),
]


def random_model_and_input(rng, shape, dtype, batch_first=True):
    batch, steps, inputs, hidden = shape
    model = ln.LSTM(inputs, hidden, batch_first=batch_first, dtype=dtype, seed=rng.integers(2**32))
    x_shape = (batch, steps, inputs) if batch_first else (steps, batch, inputs)
    return model, rng.standard_normal(x_shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch_first", [True, False])
def test_forward_matches_reference(rng, shape, dtype, batch_first):
    model, x = random_model_and_input(rng, shape, dtype, batch_first)
    y, (h_n, c_n) = model(x)
    y_ref, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict(), batch_first=batch_first)
    batch, steps, _, hidden = shape
    assert y.shape == ((batch, steps, hidden) if batch_first else (steps, batch, hidden))
    assert h_n.shape == c_n.shape == (1, batch, hidden)
    assert y.dtype == h_n.dtype == c_n.dtype == dtype
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_initial_states(rng, dtype):
    model, x = random_model_and_input(rng, (4, 6, 3, 5), dtype)
    h0 = rng.standard_normal((1, 4, 5)).astype(dtype)
    c0 = rng.standard_normal((1, 4, 5)).astype(dtype) * 3
    y, (h_n, c_n) = model(x, (h0, c0))
    y_ref, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict(), (h0, c0))
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)
    assert not np.allclose(y, model(x)[0]), "initial states were ignored"
    h0_before = h0.copy()
    model(x, (h0, c0))
    np.testing.assert_array_equal(h0, h0_before)  # inputs are never written


@pytest.mark.parametrize(
    "layout",
    [
        np.asfortranarray,
        lambda a: np.ascontiguousarray(a[::-1])[::-1],  # negative strides
        lambda a: np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1),
    ],
    ids=["fortran", "reversed", "transposed"],
)
def test_states_x_and_lengths_in_any_memory_layout(rng, layout):
    """h0, c0, x and lengths that are not C-contiguous (Fortran order, negative strides, a
    transposed view as ``run_onnx_io``'s layout 1 makes of [B, D, H] states) give the results of
    C-contiguous ones, in a call, twice (the second replayed where it can be), and a stream; the
    kernels read C-contiguous copies."""
    model = ln.LSTM(5, 6, num_layers=2, bidirectional=True, seed=1)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 4, 3, 6)).astype(np.float32)
    lengths = np.array([4, 2, 3])
    for given_lengths in (None, lengths):
        expected = reference.model_forward(model, x, (h0, c0), given_lengths)
        for _ in range(2):
            given = layout(lengths[None])[0] if given_lengths is not None else None
            y, (h_n, c_n) = model(layout(x), (layout(h0), layout(c0)), lengths=given)
            for got, wanted in zip((y, h_n, c_n), (expected[0], *expected[1]), strict=True):
                assert_close(got, wanted)
    forward = ln.LSTM(5, 6, seed=2)
    stream = forward.stream(3, (layout(h0[:1]), layout(c0[:1])))
    assert_close(stream.step(layout(x)), reference.model_forward(forward, x, (h0[:1], c0[:1]))[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 4, 6), (1, 40, 4, 64), (2, 3, 5, 7), (3, 40, 6, 8)])
def test_zero_initial_hidden_rows(rng, monkeypatch, shape, dtype, threads):
    """The first step's recurrent product is skipped where every row's h0 is 0 (a call without
    initial states): a zero h0 keeps c0, and zero rows of h0 beside others skip nothing. Every
    path a step takes: the calling thread, one row's panels (40 steps), and with threads the
    units split, unpacked (3 steps) and packed."""
    if threads:
        threads_at_any_size(monkeypatch)
    batch, _, _, hidden = shape
    model, x = random_model_and_input(rng, shape, dtype)
    c0 = rng.standard_normal((1, batch, hidden)).astype(dtype)
    for zero_rows in [list(range(batch))] + ([[0], [batch - 1]] if batch > 1 else []):
        h0 = rng.standard_normal((1, batch, hidden)).astype(dtype)
        h0[:, zero_rows] = 0
        y, (h_n, c_n) = model(x, (h0, c0))
        y_ref, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict(), (h0, c0))
        assert_close(y, y_ref)
        assert_close(h_n, h_ref)
        assert_close(c_n, c_ref)


def test_sequence_split_carries_state(rng):
    model, x = random_model_and_input(rng, (3, 20, 4, 6), np.float64)
    y, state = model(x)
    y1, state1 = model(x[:, :7])
    y2, state2 = model(x[:, 7:], state1)
    assert_close(np.concatenate([y1, y2], axis=1), y)
    assert_close(state2[0], state[0])
    assert_close(state2[1], state[1])


@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_input(rng, batch_first):
    model, x = random_model_and_input(rng, (1, 8, 3, 4), np.float32, batch_first)
    x2 = x[0] if batch_first else x[:, 0]
    h0 = rng.standard_normal((1, 4)).astype(np.float32)
    y, (h_n, c_n) = model(x2, (h0, h0))
    y_batched, (h_b, c_b) = model(x, (h0[:, None], h0[:, None]))
    assert y.shape == (8, 4) and h_n.shape == c_n.shape == (1, 4)
    np.testing.assert_array_equal(y, y_batched[0] if batch_first else y_batched[:, 0])
    np.testing.assert_array_equal(h_n, h_b[:, 0])


@pytest.mark.parametrize("layout", ["fortran", "strided", "transposed"])
def test_any_memory_layout_gives_the_same_result(rng, layout):
    model, x = random_model_and_input(rng, (5, 7, 6, 4), np.float32)
    expected = model(x)[0]
    if layout == "fortran":
        other = np.asfortranarray(x)
    elif layout == "strided":
        other = np.repeat(x, 2, axis=2)[:, :, ::2]
    else:
        other = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not other.flags.c_contiguous
    np.testing.assert_array_equal(model(other)[0], expected)


def test_empty_batch_gives_empty_outputs():
    model = ln.LSTM(3, 4)
    y, (h_n, c_n) = model(np.zeros((0, 5, 3), np.float32))
    assert y.shape == (0, 5, 4) and h_n.shape == c_n.shape == (1, 0, 4)


def test_zero_steps_is_an_error():
    with pytest.raises(ValueError, match=r"x: expected at least one time step, got shape \(2, 0"):
        ln.LSTM(3, 4)(np.zeros((2, 0, 3), np.float32))


def test_nan_in_nan_out_only_where_it_flows(rng):
    model, x = random_model_and_input(rng, (3, 6, 4, 5), np.float32)
    x[1, 2, 0] = np.nan
    y, (h_n, c_n) = model(x)
    assert np.isnan(y[1, 2:]).all() and not np.isnan(y[1, :2]).any()
    assert not np.isnan(y[[0, 2]]).any()
    assert np.isnan(h_n[0, 1]).all() and np.isnan(c_n[0, 1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_inputs_stay_finite(rng, dtype):
    model, x = random_model_and_input(rng, (2, 5, 3, 4), dtype)
    x *= 5000
    y, (h_n, c_n) = model(x)
    assert np.isfinite(y).all() and np.isfinite(c_n).all()
    assert_close(y, reference.lstm_forward(x, model.state_dict())[0])


def test_repr_names_the_options_that_differ_from_the_defaults():
    assert repr(ln.LSTM(4, 6)) == "LSTM(4, 6, batch_first=True, dtype=float32)"
    deep = ln.LSTM(4, 6, 2, bias=False, batch_first=False, bidirectional=True, proj_size=3,
                   dtype=np.float64)  # fmt: skip
    assert repr(deep) == (
        "LSTM(4, 6, num_layers=2, bias=False, batch_first=False, bidirectional=True, "
        "proj_size=3, dtype=float64)"
    )
    onnx_options = ln.LSTM(4, 6, reverse=True, peepholes=True, clip=2.0, input_forget=True,
                           activations=("hardsigmoid", "tanh", "tanh"))  # fmt: skip
    assert repr(onnx_options) == (
        "LSTM(4, 6, batch_first=True, reverse=True, peepholes=True, clip=2.0, input_forget=True, "
        "activations=('hardsigmoid', 'tanh', 'tanh'), dtype=float32)"
    )


def test_weights_are_pytorch_initialised_and_reproducible():
    model = ln.LSTM(7, 9, seed=3)
    bound = 1 / np.sqrt(9)
    shapes = {"weight_ih_l0": (36, 7), "weight_hh_l0": (36, 9), "bias_ih_l0": (36,)}
    shapes["bias_hh_l0"] = (36,)
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == shapes
    for value in state.values():
        assert value.dtype == np.float32 and np.abs(value).max() <= bound
        assert value.std() > bound / 3
    np.testing.assert_array_equal(ln.LSTM(7, 9, seed=3).weight_hh_l0, model.weight_hh_l0)
    assert not np.array_equal(ln.LSTM(7, 9, seed=4).weight_hh_l0, model.weight_hh_l0)


def test_weights_are_writable_and_checked(rng):
    model, x = random_model_and_input(rng, (2, 3, 4, 5), np.float64)
    model.bias_ih_l0 = np.zeros(20, np.float32)  # floats are cast to the model's dtype
    assert model.bias_ih_l0.dtype == np.float64 and not model.bias_ih_l0.any()
    model.weight_hh_l0[:] = 0.0  # in place
    y = model(x)[0]
    assert_close(y, reference.lstm_forward(x, model.state_dict())[0])
    with pytest.raises(ValueError, match=r"weight_ih_l0: expected shape \(4H, I\) = \(20, 4\)"):
        model.weight_ih_l0 = np.zeros((20, 5))
    with pytest.raises(TypeError, match=r"bias_hh_l0: expected a float32 or float64 array"):
        model.bias_hh_l0 = np.zeros(20, np.int32)


def test_structure_is_read_only_and_absent_weights_are_not_set(rng):
    """An option that shapes the weights or the compiled cell cannot change after the model is
    built (setting ``clip`` was ignored by the forward while ``config`` and ``save`` kept it),
    nor can a weight the model lacks be set (an attribute no forward reads); ``batch_first`` and
    attributes of the user's own can."""
    model = ln.LSTM(3, 4, bias=False, seed=0)
    for name, value in [("clip", 1.0), ("hidden_size", 5), ("dtype", np.float64),
                        ("activations", ("sigmoid", "relu", "tanh"))]:  # fmt: skip
        with pytest.raises(AttributeError, match=rf"{name}: fixed when the model is built"):
            setattr(model, name, value)
    for name in ("weight_hr_l0", "bias_ih_l0", "weight_ih_l1", "weight_hh_l0_reverse"):
        with pytest.raises(AttributeError, match=rf"{name}: this model has no such weight"):
            setattr(model, name, np.zeros((4, 4), np.float32))
    assert model.config == ln.LSTM(3, 4, bias=False).config
    model.batch_first, model.note = False, "mine"
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    assert_close(model(x)[0], reference.model_forward(model, x)[0])
    clone = pickle.loads(pickle.dumps(model))
    assert clone.note == "mine" and not clone.batch_first


def test_state_dict_round_trip(rng):
    source = ln.LSTM(4, 6, seed=1)
    target = ln.LSTM(4, 6, seed=2)
    target.load_state_dict(source.state_dict())
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(target(x)[0], source(x)[0])


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda m: m(np.zeros((2, 3, 4, 1), np.float32)), ValueError, r"x: expected a 3-D array"),
        (lambda m: m(np.zeros((2, 3, 5), np.float32)), ValueError, r"I = 4 .*\(2, 3, 5\)"),
        (
            lambda m: m(np.zeros((2, 3, 4))),
            TypeError,
            r"x: expected dtype float32, got float64; convert it with \.astype\(np\.float32\)",
        ),
        (lambda m: m(np.zeros((2, 3, 4), int)), TypeError, r"x: expected a float32 or float64"),
        (
            lambda m: m(np.zeros((2, 3, 4), np.dtype(np.float32).newbyteorder())),
            TypeError,
            r"x: .*got dtype [<>]f4 \(float32 in the other byte order\); .*\.astype\(np\.float32\)",
        ),
        (lambda m: m(np.zeros((2, 3, 4), np.float32), np.zeros((1, 2, 6))), ValueError, r"hx: "),
        (
            lambda m: m(np.zeros((2, 3, 4), np.float32), (np.zeros((1, 3, 6), np.float32),) * 2),
            ValueError,
            r"h0: expected shape \(D·num_layers, B, H_out\) = \(1, 2, 6\), got \(1, 3, 6\)",
        ),
        (
            lambda m: m(np.zeros((2, 3, 4), np.float32), (np.zeros((1, 2, 6), np.float32),) * 3),
            ValueError,
            r"hx: expected a pair \(h0, c0\)",
        ),
        (
            lambda m: m(
                np.zeros((2, 3, 4), np.float32),
                (np.zeros((1, 2, 6), np.float32), np.zeros((1, 2, 6))),
            ),
            TypeError,
            r"c0: expected dtype float32, got float64",
        ),
        (
            lambda m: m(np.zeros((2, 3, 4), np.float32), (None, None)),
            TypeError,
            r"h0: expected a float32 or float64 array, got None",
        ),
        (
            lambda m: m([[[0.0] * 4] * 3, [[0.0] * 4] * 2]),
            TypeError,
            r"x: expected a float32 or float64 array; NumPy cannot read the list given",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(ln.LSTM(4, 6))


def test_torch_tensors_numpy_cannot_read_are_a_clear_error():
    torch = pytest.importorskip("torch")
    model = ln.LSTM(4, 6)
    needs_grad = torch.zeros(2, 3, 4, requires_grad=True)
    with pytest.raises(TypeError, match=r"x: .*NumPy cannot read the Tensor .*requires grad"):
        model(needs_grad)
    with pytest.raises(TypeError, match=r"x: .*the Tensor of dtype torch.bfloat16 given"):
        model(torch.zeros(2, 3, 4, dtype=torch.bfloat16))
    np.testing.assert_array_equal(
        model(needs_grad.detach())[0].numpy(), model(np.zeros((2, 3, 4), np.float32))[0]
    )
    # a conversion spelled as torch spells it
    with pytest.raises(TypeError, match=r"x: .*float64; convert it with \.to\(torch\.float32\)"):
        model(torch.zeros(2, 3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"c0: .*float64; convert it with \.to\(torch\.float32\)"):
        model(torch.zeros(2, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6).double()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lists_are_read_in_the_models_dtype(rng, dtype):
    model = ln.LSTM(4, 6, dtype=dtype, seed=0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    h0, c0 = rng.standard_normal((2, 1, 2, 6)).astype(dtype)
    y, (h_n, c_n) = model(x.tolist(), (h0.tolist(), c0.tolist()))
    expected_y, (expected_h, expected_c) = model(x, (h0, c0))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(h_n, expected_h)
    np.testing.assert_array_equal(c_n, expected_c)
    stream = model.stream(batch_size=2)
    np.testing.assert_array_equal(stream.step(x.tolist()), model(x)[0])


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"input_size": 0, "hidden_size": 3}, ValueError, r"input_size: expected a positive"),
        ({"input_size": 2, "hidden_size": 2.5}, TypeError, r"hidden_size: expected a positive"),
        ({"input_size": 2, "hidden_size": 3, "dtype": np.float16}, TypeError, r"dtype: expected"),
        ({"input_size": 2, "hidden_size": 3, "dtype": "int32"}, TypeError, r"dtype: expected"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ln.LSTM(**kwargs)


def test_dtype_none_is_the_default():
    """``dtype=None`` is float32, the default, as in PyTorch (NumPy's ``np.dtype(None)`` made it
    float64)."""
    assert ln.LSTM(2, 3, dtype=None).dtype == ln.LSTM(2, 3).dtype == np.float32


def test_workspace_does_not_grow_with_sequence_length(one_numba_thread):
    """The projection is chunked: ``projection_steps`` × B' rows of (I + 4H) workspace per thread,
    plus the (B', 4H) recurrent product, and W_hh packed for the register tile. On one thread
    (``one_numba_thread``)."""
    model = ln.LSTM(32, 32, seed=0)
    peaks = []
    for steps in (1000, 10000):
        x = np.zeros((4, steps, 32), np.float32)
        model(x)  # compile first
        peaks.append(allocation_peak(model, x)[1] - 4 * steps * 32 * 4)  # minus y
    assert peaks[1] <= peaks[0] + 4096, peaks
    per_thread = 4 * cpu.projection_steps.py_func(4, 10000) * (32 + 4 * 32) + 4 * 4 * 32
    per_thread += 4 * 32 * 32  # W_hh packed for the tile (once, whatever the threads)
    assert peaks[1] < per_thread * 4 * 1.1, peaks


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "product", [cpu.RECURRENT_BLAS, cpu.RECURRENT_DOT_TILE, cpu.RECURRENT_PANELS]
)
@pytest.mark.parametrize("partitions", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"reverse": True},
        {"bidirectional": True},
        {"bidirectional": True, "proj_size": 4, "peepholes": True},
    ],
    ids=["plain", "reverse", "bidirectional", "projected-onnx-cell"],
)
def test_every_kernel_plan_matches_reference(rng, dtype, product, partitions, batch_first, options):
    """Each way the forward can run (BLAS or one of the tiles for the recurrent product, batch
    split over threads or not, directions in parallel), forced on a shape with partial tiles
    (B = 7, split 3 + 4 or 2 + 2 + 3), lengths that include 0 and T, and x's rows read in
    another order (``x_rows``, as the model's length order)."""
    batch, steps, inputs, hidden = 7, 11, 5, 9
    model = ln.LSTM(
        inputs, hidden, batch_first=batch_first, dtype=dtype, seed=rng.integers(2**32), **options
    )
    x = rng.standard_normal((batch, steps, inputs) if batch_first else (steps, batch, inputs))
    x = x.astype(dtype)
    directions = model.num_directions
    h = rng.standard_normal((directions, batch, model.output_size)).astype(dtype)
    c = rng.standard_normal((directions, batch, hidden)).astype(dtype)
    lengths = np.array([0, steps, 3, 1, steps, 7, 2])
    x_rows = rng.permutation(batch)  # kernel row b reads x's row x_rows[b]
    expected, (h_ref, c_ref) = reference.lstm_forward(
        np.take(x, x_rows, axis=0 if batch_first else 1), model.state_dict(), (h, c), batch_first,
        lengths=lengths, reverse=model.reverse,
    )  # fmt: skip
    y = np.zeros(expected.shape, dtype)
    w_ih, w_hh, w_hr, bias, cell = model._cpu_layer(0)  # w_hr None without the projection
    panels = cpu.pack_panels(w_hh) if product == cpu.RECURRENT_PANELS else None
    w_hh = None if product == cpu.RECURRENT_PANELS else w_hh  # read from the panels then
    cpu.lstm_partitioned_forward(
        x, x_rows, w_ih, w_hh, w_hr, bias, cell, h, c, y, 0, lengths, model.reverse, batch_first,
        product, panels, None, partitions, None, 0,
    )  # fmt: skip
    assert_close(y, expected)
    assert_close(h, h_ref)
    assert_close(c, c_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("threads", [True, False], ids=["parallel", "one-after-another"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_units_split_over_threads_match_reference(
    rng, dtype, parts, batch, batch_first, reverse, threads, packed, monkeypatch
):
    """A few sequences' hidden units split into parts that hand over every step
    (``cpu.lstm_unit_split_forward``): uneven parts (H = 11: 5 + 6, 3 + 4 + 4, every leftover of
    the 4-row tile), one row or several, on each part's packed rows (the register tile) or on
    them as they are (``units_product``, the dot tile), lengths below T (different ones read
    forwards: the shorter rows sit the last steps out), several projection chunks (of few rows:
    gathered; long sequences, the chunks' bounds as they are), read forwards and backwards.
    "one-after-another" runs the driver's workers in turn on this thread (its Python function,
    where ``prange`` is ``range``), as a threading layer that does not run them at once would:
    the first must then run every part of every step instead of waiting for the others."""
    for least in ("UNIT_SPLIT_PACK_MIN_STEPS", "UNIT_SPLIT_ONE_ROW_PACK_MIN_STEPS"):
        monkeypatch.setattr(cpu, least, 1 if packed else 100)
    if not threads:
        monkeypatch.setattr(cpu, "lstm_unit_split_forward", cpu.lstm_unit_split_forward.py_func)
    steps, inputs, hidden, length = 300, 6, 11, 298  # chunks of 51–256 steps (5 rows – 1)
    assert cpu.projection_steps(batch, steps) < length
    model = ln.LSTM(
        inputs, hidden, batch_first=batch_first, dtype=dtype, reverse=reverse, seed=rng.integers(9)
    )
    shape = (batch, steps, inputs) if batch_first else (steps, batch, inputs)
    x = rng.standard_normal(shape).astype(dtype)
    h = rng.standard_normal((batch, hidden)).astype(dtype)
    c = rng.standard_normal((batch, hidden)).astype(dtype)
    lengths = np.full(batch, length) if reverse else length - 2 * np.arange(batch)
    expected, (h_ref, c_ref) = reference.lstm_forward(
        x, model.state_dict(), (h[None], c[None]), batch_first, lengths=lengths, reverse=reverse
    )
    y = np.zeros(x.shape[:2] + (hidden,), dtype)
    weights = model.state_dict()
    cpu._unit_split_forward(
        x, weights["weight_ih_l0"], weights["weight_hh_l0"],
        weights["bias_ih_l0"] + weights["bias_hh_l0"], h, c, y, 0, lengths, int(lengths.max()),
        reverse, batch_first, parts,
    )  # fmt: skip
    assert_close(y, expected)
    assert_close(h, h_ref[0])
    assert_close(c, c_ref[0])


@pytest.mark.parametrize("batch", [1, 3, 5])
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "batch_first": False}])
def test_few_sequences_run_their_units_on_threads_where_that_pays(rng, batch, options, monkeypatch):
    """A batch of up to ``UNIT_SPLIT_MAX_BATCH`` rows of one length takes
    ``cpu.lstm_unit_split_forward`` when the plan says so (every layer), through
    ``LSTM.__call__``; models and batches the split does not cover take the other drivers."""
    from numba import get_num_threads

    if get_num_threads() < 2:
        pytest.skip("Numba runs one thread here: nothing to split over")
    threads_at_any_size(monkeypatch)
    monkeypatch.setattr(cpu, "UNIT_SPLIT_MIN_UNITS", 4)  # 2 parts of H = 8
    calls = []
    driver = cpu.lstm_unit_split_forward

    bounds = list(inspect.signature(driver.py_func).parameters).index("bounds")

    def recording_driver(*arguments):
        calls.append(arguments[bounds].size - 1)  # parts + 1
        driver(*arguments)

    monkeypatch.setattr(cpu, "lstm_unit_split_forward", recording_driver)
    model = ln.LSTM(5, 8, seed=rng.integers(9), **options)
    shape = (batch, 9, 5) if model.batch_first else (9, batch, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    y, (h_n, c_n) = model(x)
    y_ref, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict(), None, model.batch_first)
    assert calls == [2] * model.num_layers
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)
    calls.clear()
    for other in (ln.LSTM(5, 8, bidirectional=True), ln.LSTM(5, 8, proj_size=3)):
        other(rng.standard_normal((batch, 9, 5)).astype(np.float32))
    model(rng.standard_normal((cpu.UNIT_SPLIT_MAX_BATCH + 1, 9, 5)).astype(np.float32))
    model(x, return_gates=True)
    reverse = ln.LSTM(5, 8, reverse=True, batch_first=model.batch_first)
    reverse(np.concatenate([x, x], axis=0 if model.batch_first else 1), lengths=[9, 8] * batch)
    assert calls == []
    # rows of different lengths read forwards: split, the shorter rows sitting the last steps out
    lengths = [9, 4, 7, 9, 2][:batch]
    y, (h_n, c_n) = model(x, lengths=lengths)
    y_ref, (h_ref, c_ref) = reference.lstm_forward(
        x, model.state_dict(), None, model.batch_first, lengths=lengths
    )
    assert calls == [2] * model.num_layers
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


@pytest.mark.parametrize(
    "options, split",
    [({}, True), ({"bidirectional": True}, False), ({"proj_size": 3}, False)]
    + [({"reverse": True}, False), ({"num_layers": 2, "batch_first": True}, True)],
)
@pytest.mark.parametrize("ordered", [True, False], ids=["order_pays", "order_costs"])
def test_few_rows_of_lengths_run_in_length_order_unless_their_units_split(
    rng, options, split, ordered, monkeypatch
):
    """Three rows of different lengths: the kernels read x's rows longest first (``x_rows``),
    so that finished rows stop costing work, except where their hidden units split over the
    threads, which reads them as they are (a bidirectional call of 3 rows at H = 256 ran 1.2–1.35×
    faster in length order, docs/performance.md), or where the order saves fewer multiply-adds
    than ``cpu.LENGTH_ORDER_MIN_MULTIPLY_ADDS`` (these tiny rows, but for a floor of 0): rows as
    they come, finished ones inside the running prefix computed and not written."""
    from numba import get_num_threads

    if split and get_num_threads() < 2:
        pytest.skip("Numba runs one thread here: nothing to split over")
    threads_at_any_size(monkeypatch)
    if ordered:
        monkeypatch.setattr(cpu, "LENGTH_ORDER_MIN_MULTIPLY_ADDS", 0)
    seen = []
    layer_forward = cpu.lstm_layer_forward

    def recording_layer_forward(*arguments, x_rows, **options):
        seen.append(x_rows)
        layer_forward(*arguments, x_rows=x_rows, **options)

    monkeypatch.setattr(cpu, "lstm_layer_forward", recording_layer_forward)
    model = ln.LSTM(5, 8, seed=rng.integers(9), **options)
    lengths = np.array([2, 9, 5])
    x = rng.standard_normal((3, 9, 5) if model.batch_first else (9, 3, 5)).astype(np.float32)
    y, (h_n, c_n) = model(x, lengths=lengths)
    y_ref, (h_ref, c_ref) = reference.lstm_forward(
        x, model.state_dict(), None, model.batch_first, lengths=lengths, reverse=model.reverse
    )
    assert len(seen) == model.num_layers
    if split or not ordered:
        assert seen[0] is None
    else:
        assert seen[0].tolist() == [1, 2, 0]
    assert all(rows is None for rows in seen[1:])  # deeper layers read y, in the kernels' order
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


@pytest.mark.parametrize(
    "driver, batch",
    [("rows, one thread", 4), ("rows on threads", 6), ("units on threads", 3)]
    + [("units in turn", 2)],
)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_stacked_layers_run_in_place(rng, driver, batch, batch_first, reverse, monkeypatch):
    """In one direction, the layers after the first read their input from y and overwrite it
    (``LSTM._run_layers``), which is right only if every driver reads x at a chunk of times before
    any of its threads writes y there: several projection chunks (``cpu.projection_steps``: 85–128
    steps for two to four rows), on every driver; the sequences long rather than the chunks' bounds
    patched, which the rows' kernels compile in (a kernel compiled under a patch would serve later
    tests from the tests' Numba cache). Run in turn on this thread (the driver's Python function),
    the units split's first worker runs every part of a step one after the other, so that a part
    reading x after another part wrote y there would get a wrong input every time."""
    if driver != "rows, one thread":
        if cpu.get_num_threads() < 2:
            pytest.skip("Numba runs one thread here: nothing to split over")
        threads_at_any_size(monkeypatch)
    if driver == "units in turn":
        monkeypatch.setattr(cpu, "lstm_unit_split_forward", cpu.lstm_unit_split_forward.py_func)
    steps = 200
    assert cpu.projection_steps(min(batch, 3), steps) < steps  # two chunks or more a thread
    model = ln.LSTM(6, 6, num_layers=3, batch_first=batch_first, reverse=reverse, seed=5)
    x = rng.standard_normal((batch, steps, 6) if batch_first else (steps, batch, 6))
    x = x.astype(np.float32)
    # rows of one length backwards, as the units split takes them
    lengths = np.full(batch, steps - 2) if reverse else steps - 2 * np.arange(batch)
    given = x.copy()
    y, (h_n, c_n) = model(x, lengths=lengths)
    np.testing.assert_array_equal(x, given)  # in place on y, never on the caller's x
    y_ref, (h_ref, c_ref) = reference.lstm_forward(
        x, model.state_dict(), None, batch_first, lengths=lengths, reverse=reverse
    )
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


def test_stacked_layers_hold_no_second_output(monkeypatch, one_numba_thread):
    """A stack in one direction allocates what one layer does (the layers after the first run
    on y in place); in two directions, half of y more, where they run in place
    (``cpu.directions_in_place``), else the whole layer below's output. On one thread."""
    x = np.zeros((4, 2000, 16), np.float32)
    peaks = {}
    for layers, bidirectional, least_in_place in (
        (1, False, 0), (3, False, 0), (1, True, 0), (3, True, 1 << 62), (3, True, 0)
    ):  # fmt: skip
        monkeypatch.setattr(cpu, "DIRECTIONS_IN_PLACE_MIN_BYTES", least_in_place)
        model = ln.LSTM(16, 16, layers, batch_first=True, bidirectional=bidirectional)
        model(x)  # compile first
        peaks[layers, bidirectional, least_in_place] = allocation_peak(model, x)[1]
    half_y = x.nbytes  # y (B, T, 2H), twice as large as x
    assert peaks[3, False, 0] < peaks[1, False, 0] + 4096, peaks
    one_layer = peaks[1, True, 0]
    side_by_side = peaks[3, True, 1 << 62]  # y and the layer below's, not the one below that
    assert one_layer + 2 * half_y < side_by_side < one_layer + 2 * half_y + 32 * 1024, peaks
    assert one_layer + half_y - 4096 < peaks[3, True, 0] < side_by_side - half_y + 4096, peaks


@pytest.mark.parametrize("most_groups", [1, 2, 4])
@pytest.mark.parametrize("batch_first", [True, False])
def test_directions_in_turn_hold_a_group_of_rows(
    rng, batch_first, most_groups, monkeypatch, one_numba_thread
):  # fmt: skip
    """Two directions in turn (``LSTM._run_directions_in_turn``) hold the forward direction's
    output of a group of rows beyond y (``cpu.in_turn_groups``): half of y / groups, and the
    workspaces (≈ 0.3 MB here, y 7.7 MB), batch-first and time-major; rows of several lengths
    (each group's zeros past them, after the group before), y as the reference's. On one
    thread, as the tests above."""
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: cpu.IN_TURN)
    monkeypatch.setattr(cpu, "IN_TURN_GROUPS", most_groups)
    batch, steps = 24, 2500
    x = rng.standard_normal((batch, steps, 16) if batch_first else (steps, batch, 16))
    x = x.astype(np.float32)
    lengths = rng.permutation(np.linspace(600, steps, batch).astype(np.int64))
    model = ln.LSTM(16, 16, 2, bidirectional=True, batch_first=batch_first, seed=most_groups)
    model(x, lengths=lengths)  # compile first
    (y, _), peak = allocation_peak(model, x, lengths=lengths)
    y_ref, _ = reference.lstm_forward(x, model.state_dict(), None, batch_first, lengths=lengths)
    assert_close(y, y_ref)
    assert cpu.in_turn_groups(batch, False) == most_groups
    waiting = y.nbytes // 2 // most_groups
    assert waiting < peak - y.nbytes < waiting + (512 << 10), (peak, y.nbytes, waiting)


def test_in_turn_groups_keep_at_most_the_rows_low_memory_allows():
    """``cpu.in_turn_groups``: four groups of at least six rows by default, more where a group
    would hold more than ``most_rows`` (``low_memory``), one for traced calls."""
    assert [cpu.in_turn_groups(batch, False) for batch in (5, 12, 23, 24, 64)] == [1, 2, 3, 4, 4]
    assert cpu.in_turn_groups(12, False, 5) == 3  # 4 + 4 + 4
    assert cpu.in_turn_groups(32, False, 10) == 4  # the default's 8 rows a group fit
    assert cpu.in_turn_groups(64, False, 10) == 7
    assert cpu.in_turn_groups(12, True, 1) == 1


def test_low_memory_groups_keep_the_fewest_rows_they_fit(monkeypatch):
    """``low_memory`` in turn: the fewest groups whose largest fits the budget
    (``cpu.in_turn_group_bytes``, its threads' workspaces included), as long as that group
    keeps ``cpu.LOW_MEMORY_GROUP_MIN_ROWS`` rows; else the forward direction recomputed (9 rows
    in groups of 5 over the budget, in three groups of 3 under that minimum)."""
    model = ln.LSTM(16, 32, 2, bidirectional=True)
    steps = 500
    sizes = (steps, 64, 32, 32, 4)  # T, I = 2 H_out, H, H_out, itemsize
    monkeypatch.setattr(cpu, "directions_in_place", lambda *arguments: cpu.IN_TURN)
    for batch in (8, 9, 16):
        x = np.zeros((batch, steps, 16), np.float32)
        y = np.zeros((batch, steps, 64), np.float32)
        weights = sum(array.nbytes for array in model.state_dict().values())
        fits = (cpu.in_turn_group_bytes(4, *sizes) + 1) / (x.nbytes + y.nbytes + weights)
        monkeypatch.setattr(cpu, "LOW_MEMORY_SHARE", fits)  # 4 rows a group, not 5
        assert cpu.in_turn_group_bytes(5, *sizes) > fits * (x.nbytes + y.nbytes + weights)
        plan = model._directions_in_place(x, y, np.full(batch, steps), None, True)
        if batch == 9:
            assert plan[0] == cpu.RECOMPUTED, plan
        else:  # 8 rows in two groups, 16 in four
            assert plan == (cpu.IN_TURN, 4), plan


@pytest.mark.parametrize(
    "batch, steps, inputs, hidden, width", [(1, 4000, 512, 256, 256), (4, 8000, 512, 256, 256),
                                            (2, 50000, 128, 64, 64), (3, 70, 20, 24, 12)]
)  # fmt: skip
def test_recompute_plan_fits_the_budget(batch, steps, inputs, hidden, width):
    """``cpu.recompute_plan``: the pending steps U, the window arrays, the states kept a window
    and two workspaces of a window's steps within the budget, whatever it is; U at most T/2 and
    the longest window where the budget holds that; none pending where it holds nothing."""
    lengths = np.full(batch, steps, dtype=np.int64)
    step_bytes = batch * width * 4
    arguments = (lengths, steps, inputs, hidden, width, 4)
    for budget in np.geomspace(step_bytes, 4 * steps * step_bytes, 13):
        pending, window = cpu.recompute_plan(budget, *arguments)
        assert 0 <= pending <= steps // 2 and 1 <= window <= min(steps, 128)
        if pending > 0:
            windows = -(-(steps - pending) // window)
            held = (pending + 3 * window) * step_bytes + windows * batch * (width + hidden) * 4
            workspace = cpu.rows_workspace_bytes(batch, window, inputs, hidden, width, 4)
            assert held + 2 * workspace <= budget
    assert cpu.recompute_plan(1e12, *arguments) == (steps // 2, min(steps, 128))
    assert cpu.recompute_plan(0, *arguments)[0] == 0


@pytest.mark.parametrize("batch_first", [True, False])
def test_lengths_copy_neither_x_nor_y(rng, batch_first, monkeypatch, one_numba_thread):
    """With lengths the rows run in length order, read from x where they are and put back in
    order in y in place: the peak is a forward's without lengths, plus a chunk of a row of y for
    the permutation (1 KiB here, a row 64 KiB). On one thread, as the test above; lengths out of
    order, so the order is not the identity, and one (the row worker's) at B = 8 >
    ``UNIT_SPLIT_MAX_BATCH``."""
    from lstm_numba import model as model_module

    monkeypatch.setattr(model_module, "MOVE_ROWS_CHUNK_BYTES", 1024)
    batch, steps = 8, 1000
    model = ln.LSTM(16, 16, 2, batch_first=batch_first, seed=0)
    x = rng.standard_normal((batch, steps, 16) if batch_first else (steps, batch, 16))
    x = x.astype(np.float32)
    lengths = rng.permutation(np.linspace(steps // 2, steps, batch).astype(np.int64))
    y_ref, _ = reference.lstm_forward(x, model.state_dict(), None, batch_first, lengths=lengths)
    peaks = []
    for given in (None, lengths):
        model(x, lengths=given)  # compile first
        (y, _), peak = allocation_peak(model, x, lengths=given)
        peaks.append(peak)
    assert_close(y, y_ref)
    assert peaks[1] < peaks[0] + 4096, peaks


@pytest.mark.parametrize(
    "shape, axis", [((5, 40, 6), 0), ((40, 5, 6), 1), ((2, 5, 7, 33, 3), 2), ((3, 1, 4), 0)]
)
@pytest.mark.parametrize("chunk_bytes", [1, 100, 1 << 20])
def test_rows_move_in_place_along_their_cycles(rng, shape, axis, chunk_bytes, monkeypatch):
    """``_move_rows_in_place`` puts row k at order[k] for random permutations (y batch-first and
    time-major, the traces (L·D, 5, B, T, H)), a chunk of time steps at a time: one step, a few,
    or whole rows."""
    from lstm_numba import model as model_module

    monkeypatch.setattr(model_module, "MOVE_ROWS_CHUNK_BYTES", chunk_bytes)
    for _ in range(4):
        array = rng.standard_normal(shape)
        order = rng.permutation(shape[axis])
        expected = np.empty_like(array)
        np.moveaxis(expected, axis, 0)[order] = np.moveaxis(array, axis, 0)
        model_module._move_rows_in_place(array, order, axis)
        np.testing.assert_array_equal(array, expected)


def test_plan_splits_units_of_few_sequences_where_that_pays(monkeypatch):
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 4)
    monkeypatch.setattr(cpu, "cache_bytes", lambda level: {2: 1 << 20, 3: 32 << 20}[level])

    def least_steps(hidden, batch=1):  # for enough work to split
        return -(-cpu.UNIT_SPLIT_MIN_MULTIPLY_ADDS // (batch * 4 * hidden * hidden))

    def plan(batch=1, hidden=256, steps=None, directions=1, plain=True, itemsize=4):
        steps = least_steps(hidden, batch) if steps is None else steps
        return cpu.plan_unit_split(batch, hidden, steps, directions, plain, itemsize)

    units = cpu.UNIT_SPLIT_MIN_UNITS
    assert plan() == 4
    assert plan(hidden=2 * units) == 2
    assert plan(hidden=2 * units - 1) == 1  # too few units for two parts
    # one row's share of W_hh, 16·H²/parts bytes in float32, must fit a core's L2 (1 MiB here),
    # unless the parts pack it: then at any H
    assert plan(hidden=512) == 4
    assert plan(hidden=513) == 1
    assert plan(hidden=362, itemsize=8) == 4
    assert plan(hidden=363, itemsize=8) == 1
    packed = cpu.UNIT_SPLIT_ONE_ROW_PACK_MIN_STEPS
    assert plan(hidden=513, steps=packed) == plan(hidden=4096, steps=packed) == 4
    assert plan(hidden=363, steps=packed, itemsize=8) == 4
    assert plan(hidden=513, steps=packed - 1) == 1
    assert plan(steps=least_steps(256) - 1) == 1  # too little work to pay for the threads
    # several rows: up to UNIT_SPLIT_MAX_BATCH, at any H, one step or many
    most, few = cpu.UNIT_SPLIT_MAX_BATCH, 4  # rows; steps
    assert plan(batch=2, steps=few) == plan(batch=3, steps=few) == 4
    assert plan(batch=most, hidden=512, steps=few) == 4  # 128 units a part, see below
    assert plan(batch=2, hidden=1024, steps=1) == 4
    assert plan(batch=2, hidden=96, steps=least_steps(96, 2)) == 2
    assert plan(batch=2, hidden=96, steps=least_steps(96, 2) - 1) == 1
    assert plan(batch=2, hidden=512, steps=1) == 4
    # the parts pack their rows of W_hh where the steps repay it: two and four rows, which fill
    # the dot tile, from twice as many beyond H = 512; three at any H; five from half as many
    packs = cpu.UNIT_SPLIT_PACK_MIN_STEPS
    for batch, hidden, least in [(2, 512, packs), (4, 512, packs), (2, 513, 2 * packs)]:
        packing = [cpu.unit_split_packs(batch, hidden, steps) for steps in (least - 1, least)]
        assert packing == [False, True], (batch, hidden)
    assert cpu.unit_split_packs(4, 513, 2 * packs) and not cpu.unit_split_packs(4, 513, packs)
    assert cpu.unit_split_packs(3, 1024, packs) and not cpu.unit_split_packs(3, 1024, packs - 1)
    assert cpu.unit_split_packs(5, 1024, packs // 2)
    assert not cpu.unit_split_packs(5, 1024, packs // 2 - 1)
    one_row = cpu.UNIT_SPLIT_ONE_ROW_PACK_MIN_STEPS  # one row, at any H
    assert [cpu.unit_split_packs(1, 128, steps) for steps in (one_row - 1, one_row)] == [0, 1]
    assert not cpu.unit_split_packs(1, 1024, one_row - 1)
    assert plan(batch=most + 1) == plan(batch=0, steps=100) == 1
    assert plan(directions=2) == plan(plain=False) == 1
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 2)
    assert (plan(hidden=362), plan(hidden=363)) == (2, 1)
    # from PARTITION_MIN_BATCH rows on, against the rows split: enough units a part
    against_rows = 2 * cpu.UNIT_SPLIT_MIN_UNITS_AGAINST_ROWS
    for batch in range(cpu.PARTITION_MIN_BATCH, most + 1):
        assert plan(batch=batch, hidden=against_rows, steps=few) == 2
        assert plan(batch=batch, hidden=against_rows - 1, steps=few) == 1
    three = cpu.PARTITION_MIN_BATCH - 1  # fewer rows than that: any units a part
    assert plan(batch=three, hidden=96, steps=max(few, least_steps(96, three))) == 2
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 1)
    assert plan() == plan(batch=2) == 1


def test_cache_sizes_are_read_from_the_system(tmp_path):
    for index, (level, size) in enumerate(
        [("1", "48K"), ("1", "32K"), ("2", "2048K"), ("3", "32M")]
    ):
        entry = tmp_path / f"index{index}"
        entry.mkdir()
        (entry / "level").write_text(level + "\n")
        (entry / "size").write_text(size + "\n")
    assert cpu.cache_bytes(2, str(tmp_path)) == 2048 * 1024
    assert cpu.cache_bytes(3, str(tmp_path)) == 32 * 1024 * 1024
    for level in (2, 3):
        absent = cpu.cache_bytes(level, str(tmp_path / "absent"))
        assert absent == cpu.CACHE_FALLBACK_BYTES[level]
    assert cpu.cache_bytes(2) >= 64 * 1024  # this machine's, or the fallback
    assert cpu.cache_bytes(3) >= cpu.cache_bytes(2)


def test_directions_take_turns_where_their_weights_outgrow_the_shared_cache(monkeypatch):
    monkeypatch.setattr(cpu, "cache_bytes", lambda level: {2: 1 << 20, 3: 32 << 20}[level])
    both = ln.LSTM(8, 768, bidirectional=True)._layers[0]["weight_hh"]  # 2 × 9.4 MB
    assert cpu.directions_in_turn(both, 1)
    most = cpu.DIRECTIONS_IN_TURN_MAX_BATCH
    assert cpu.directions_in_turn(both, most)  # if their units split
    assert not cpu.directions_in_turn(both, most + 1)
    assert not cpu.directions_in_turn(both[:1], 1)  # one direction has no turns to take
    smaller = ln.LSTM(8, 600, bidirectional=True)._layers[0]["weight_hh"]  # 2 × 5.8 MB
    assert not cpu.directions_in_turn(smaller, 1)
    assert cpu.directions_in_turn(smaller.astype(np.float64), 1)  # 2 × 11.5 MB


def test_directions_run_in_place_where_memory_counts(monkeypatch):
    """A bidirectional layer after the first runs in place from half of y =
    ``DIRECTIONS_IN_PLACE_MIN_BYTES`` on: in turn where each direction alone splits its rows over
    all the threads, or there is one thread, or the directions take turns anyway; else, where
    a direction's units would split or it would run on one thread of several, side by side in
    halves of time."""
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 2)
    monkeypatch.setattr(cpu, "cache_bytes", lambda level: {2: 1 << 20, 3: 32 << 20}[level])
    least = cpu.DIRECTIONS_IN_PLACE_MIN_BYTES

    def in_place(batch, steps, hidden, seed_cell=True):
        w_hh = np.empty((2, 4 * hidden, hidden), np.float32)
        lengths = np.full(batch, steps)
        return cpu.directions_in_place(w_hh, lengths, steps, seed_cell)

    rows = -(-least // (1000 * 256 * 4))  # the fewest rows of 1000 steps at H = 256 that do
    assert in_place(rows, 1000, 256) == cpu.IN_TURN
    assert in_place(rows - 1, 1000, 256) is None
    steps = 2 * least // (256 * 4)
    assert in_place(1, steps, 256) == cpu.IN_HALVES  # its units would split over the threads
    assert in_place(1, steps, 256, seed_cell=False) == cpu.IN_HALVES  # on one thread alone
    assert in_place(3, steps // 3, 256) == cpu.IN_HALVES
    assert in_place(1, 2 * least // (64 * 4), 64) == cpu.IN_HALVES  # one thread a direction
    assert in_place(1, 2 * least // (1024 * 4), 1024) == cpu.IN_TURN  # W_hh beyond half the L3
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 1)
    assert in_place(1, 2 * least // (64 * 4), 64) == cpu.IN_TURN


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("options", [{}, {"proj_size": 3, "peepholes": True}])
def test_directions_in_turn_match_reference(rng, batch, options, monkeypatch):
    """Both directions one after another (``cpu.directions_in_turn``, taken here for a tiny
    shared cache): one row's product on all threads, or a few rows' hidden units split over
    them (``cpu.lstm_unit_split_forward``, each direction into its own columns of y, the second
    reading backwards, from its own states); a few rows whose units do not split (LSTMP, ONNX's
    peepholes) run their directions side by side."""
    from numba import get_num_threads

    threads_at_any_size(monkeypatch)
    monkeypatch.setattr(cpu, "cache_bytes", lambda level: {2: 1 << 20, 3: 64}[level])
    monkeypatch.setattr(ln.model, "MOST_REPLAYS", 0)  # the second call plans, spied on
    model = ln.LSTM(5, 6, num_layers=2, bidirectional=True, seed=rng.integers(9), **options)
    x = rng.standard_normal((batch, 9, 5)).astype(np.float32)
    h0 = rng.standard_normal((4, batch, model.output_size)).astype(np.float32)
    c0 = rng.standard_normal((4, batch, 6)).astype(np.float32)
    model(x, (h0, c0))  # compiled before the worker is patched: the drivers call it by name
    driver = cpu.lstm_unit_split_forward
    column = list(inspect.signature(driver.py_func).parameters).index("column")
    columns = []

    def recording_driver(*arguments):
        columns.append(arguments[column])
        driver(*arguments)

    monkeypatch.setattr(cpu, "lstm_unit_split_forward", recording_driver)
    worker = cpu.lstm_rows_forward
    worker_column = list(inspect.signature(worker.py_func).parameters).index("column")
    worker_columns = []  # the row worker called from Python: one direction on this thread

    def recording_worker(*arguments):
        worker_columns.append(arguments[worker_column])
        worker(*arguments)

    monkeypatch.setattr(cpu, "lstm_rows_forward", recording_worker)
    y, (h_n, c_n) = model(x, (h0, c0))
    y_ref, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict(), (h0, c0), True)
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)
    split = not options and get_num_threads() > 1
    assert columns == ([0, 6] * 2 if split else []), columns
    in_turn_unsplit = batch == 1 and not split  # one row's directions, each on all the threads
    width = model.output_size
    assert worker_columns == ([0, width] * 2 if in_turn_unsplit else []), worker_columns


def test_gate_traces_of_directions_in_turn_equal_side_by_side(rng, monkeypatch):
    """One row's gate traces, each direction written at its own index, in turn as side by side."""
    model = ln.LSTM(5, 6, num_layers=2, bidirectional=True, seed=rng.integers(9))
    x = rng.standard_normal((1, 9, 5)).astype(np.float32)
    side_by_side = model(x, lengths=[7], return_gates=True)
    monkeypatch.setattr(cpu, "cache_bytes", lambda level: {2: 1 << 20, 3: 64}[level])
    in_turn = model(x, lengths=[7], return_gates=True)
    for expected, actual in zip(side_by_side[2], in_turn[2], strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)  # NaN past the length
    np.testing.assert_allclose(in_turn[0], side_by_side[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("product", ["dot_tile_product", "few_rows_product"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 9, 31, 32])
@pytest.mark.parametrize("columns", [16, 20, 24, 5])  # N mod 3 (and mod 6): every leftover tile
@pytest.mark.parametrize("inner", [7, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_tile_product_is_the_product(rng, product, rows, columns, inner, dtype):
    """a · weightsᵀ for any (M, K) × (N, K): W_hh (4H, H), W_ih (4H, I), W_hr (P, H); the 4 × 3
    tiles alone, and with one or two rows left in 2 × 6 tiles (BLAS from 32 rows)."""
    a = rng.standard_normal((rows, inner)).astype(dtype)
    weights = rng.standard_normal((columns, inner)).astype(dtype)
    out = np.full((rows, columns), np.nan, dtype)
    getattr(cpu, product)(a, weights, out)
    assert_close(out, a.astype(np.float64) @ weights.T.astype(np.float64))


@pytest.mark.parametrize("depth", [3, 8, 13, 64])  # K below, at and past whole register blocks
@pytest.mark.parametrize("count", [16, 37, 64])  # whole panels and a last one of fewer rows
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_rows_is_the_transpose_of_its_rows(rng, depth, count, dtype):
    """Panel p holds rows[W·p : W·(p + 1)] of the weights transposed, zeros past the last: rows
    in any order (a part of the units split packs its rows of each gate block), blocks moved in
    registers (``transpose_into_panel``) and the rest one value at a time."""
    weights = rng.standard_normal((80, depth)).astype(dtype)
    rows = rng.permutation(80)[:count]
    width = panel_width(np.dtype(dtype).itemsize)
    panels = np.full((panel_count(count, np.dtype(dtype).itemsize), depth, width), np.nan, dtype)
    cpu.pack_rows(weights, rows, panels)
    padded = np.zeros((panels.shape[0] * width, depth), dtype)
    padded[:count] = weights[rows]
    expected = padded.reshape(panels.shape[0], width, depth).transpose(0, 2, 1)
    np.testing.assert_array_equal(panels, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_panels_start_on_a_cache_line(rng, dtype):
    """The packed panels start on a cache line, so that no vector load of a panel row straddles
    two, whatever the allocator returned first (``empty_panels``, compiled and as Python)."""
    for hidden in [1, 3, 16, 100]:
        w_hh = rng.standard_normal((2, 4 * hidden, hidden)).astype(dtype)
        panels = cpu.pack_panels(w_hh)
        for shape in [(1, 2, hidden, 8), (3, 2, hidden, 32)]:
            empty = register_tile.empty_panels.py_func(shape, w_hh)
            assert empty.shape == shape and empty.dtype == dtype and empty.flags.c_contiguous
            assert empty.ctypes.data % register_tile.CACHE_LINE_BYTES == 0
        assert panels.flags.c_contiguous
        assert panels.ctypes.data % register_tile.CACHE_LINE_BYTES == 0


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 6, 7, 11, 13])  # every tile height, 5 + rest
@pytest.mark.parametrize("hidden", [4, 5, 9])  # 4H = 16, 20, 36: whole and partial panels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recurrent_panels_is_the_product(rng, batch, hidden, dtype):
    h = rng.standard_normal((batch, hidden)).astype(dtype)
    w_hh = rng.standard_normal((4 * hidden, hidden)).astype(dtype)
    panels = cpu.pack_panels(w_hh[None])[0]
    width = panel_width(np.dtype(dtype).itemsize)
    assert panels.shape == (panel_count(4 * hidden, np.dtype(dtype).itemsize), hidden, width)
    assert panels.shape[0] % 2 == 0 and (panels.shape[0] - 2) * width < 4 * hidden
    out = np.full((batch, panels.shape[0] * width), np.nan, dtype)
    cpu.recurrent_panels(h, panels, out)
    assert_close(out[:, : 4 * hidden], h.astype(np.float64) @ w_hh.T.astype(np.float64))
    assert np.all(out[:, 4 * hidden :] == 0), "the padding columns hold zeros, not garbage"


def packed_by_numpy(weights, width):
    """weights (R, K) as the tile reads them, packed with NumPy: (P, K, width), panel p holding
    rows [width·p, width·(p + 1)) transposed, zeros past the last row."""
    rows, depth = weights.shape
    count = -(-rows // width)
    padded = np.zeros((count * width, depth), weights.dtype)
    padded[:rows] = weights
    return np.ascontiguousarray(padded.reshape(count, width, depth).transpose(0, 2, 1))


VECTOR_WIDTHS = [32, 64]
"""Bytes of the vectors the register tile can be written in: AVX2's and AVX-512's
(``register_tile.VECTOR_BYTES`` picks one for the machine; the other must be right too)."""


@pytest.mark.parametrize("vector_bytes", VECTOR_WIDTHS)
@pytest.mark.parametrize("panels_per_tile", [1, 2])
@pytest.mark.parametrize("rows", range(1, register_tile.MAX_TILE_ROWS + 1))
def test_every_register_tile_shape_is_the_product(rng, rows, panels_per_tile, vector_bytes):
    """Each tile the IR can be written for, reading one panel or two at a time, in either vector
    width: the machine picks one of each (``register_tile.PANELS_PER_TILE``, ``VECTOR_BYTES``),
    and the others must be right too where another machine picks them. The tile starts at a row
    and panel offset and writes its rows × panels only."""
    from numba import njit

    tile = register_tile._tile(rows, panels_per_tile, vector_bytes)

    @njit
    def run(h, panels, out, b0, p):
        tile(h, panels, out, b0, p)

    hidden, width = 5, 2 * vector_bytes // 4
    w_hh = rng.standard_normal((4 * width, hidden)).astype(np.float32)
    panels = packed_by_numpy(w_hh, width)
    h = rng.standard_normal((rows + 2, hidden)).astype(np.float32)
    out = np.full((rows + 2, 4 * width), np.nan, np.float32)
    run(h, panels, out, 1, 1)
    columns = slice(width, width * (1 + panels_per_tile))
    expected = h[1 : rows + 1].astype(np.float64) @ w_hh[columns].T.astype(np.float64)
    assert_close(out[1 : rows + 1, columns], expected)
    out[1 : rows + 1, columns] = 0
    assert np.all(np.isnan(out[out != 0])) and np.count_nonzero(out == 0) == expected.size


@pytest.mark.parametrize("vector_bytes", VECTOR_WIDTHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_packing_transposes_a_block_in_either_vector_width(rng, vector_bytes, dtype):
    """``transpose_into_panel`` in either vector width: the L × L block of the rows named from
    ``first`` on and the columns from k0 on, into panel p's rows from k0 and columns from j0,
    and nothing else."""
    from numba import njit

    transpose = register_tile._transpose(vector_bytes)

    @njit
    def run(weights, rows, first, k0, panels, p, j0):
        transpose(weights, rows, first, k0, panels, p, j0)

    lanes = vector_bytes // np.dtype(dtype).itemsize
    weights = rng.standard_normal((3 * lanes, 2 * lanes + 3)).astype(dtype)
    rows = rng.permutation(3 * lanes)
    panels = np.full((2, 2 * lanes + 3, 2 * lanes), np.nan, dtype)
    run(weights, rows, lanes, 3, panels, 1, lanes)
    block = weights[rows[lanes : 2 * lanes], 3 : 3 + lanes].T
    np.testing.assert_array_equal(panels[1, 3 : 3 + lanes, lanes:], block)
    panels[1, 3 : 3 + lanes, lanes:] = np.nan
    assert np.all(np.isnan(panels))


def test_register_tile_vectors_follow_the_cpu(tmp_path):
    """The tile is written in AVX-512's vectors where the kernels are compiled for it (512-bit
    multiply-adds in the machine code: 256-bit ones run at half the peak of an Intel Xeon with
    two 512-bit FMA units), and in AVX2's elsewhere: a process compiling for this CPU without
    AVX-512 (``NUMBA_CPU_FEATURES``) packs and multiplies right in 256-bit vectors."""
    import re

    from numba import njit
    from numba.core.codegen import get_host_cpu_features

    features = get_host_cpu_features().split(",")
    if "+avx512f" in features:
        assert register_tile.VECTOR_BYTES == 64 and register_tile.PANELS_PER_TILE == 2

        @njit
        def run(h, panels, out):
            register_tile.tile_5(h, panels, out, 0, 0)

        signature = (types.float32[:, ::1], types.float32[:, :, ::1], types.float32[:, ::1])
        run.compile(signature)
        machine_code = run.inspect_asm(run.signatures[0])
        assert re.search(r"vfmadd\w*ps\s+.*zmm", machine_code)
    if "+avx2" not in features:
        pytest.skip("the AVX2 half needs a CPU with AVX2")
    without_avx512 = ",".join(f"-{f[1:]}" if f.startswith("+avx512") else f for f in features)
    script = """
import numpy as np
from lstm_numba import cpu, register_tile
assert register_tile.VECTOR_BYTES == 32 and register_tile.PANELS_PER_TILE == 1
assert cpu.panel_width(4) == 16
rng = np.random.default_rng(0)
for batch, hidden in [(1, 9), (7, 20)]:
    w_hh = rng.standard_normal((2, 4 * hidden, hidden)).astype(np.float32)
    h = rng.standard_normal((batch, hidden)).astype(np.float32)
    panels = cpu.pack_panels(w_hh)
    assert panels.shape[-1] == 16
    out = np.empty((batch, panels.shape[1] * 16), np.float32)
    cpu.recurrent_panels(h, panels[1], out)
    error = np.abs(out[:, : 4 * hidden] - h.astype(np.float64) @ w_hh[1].T.astype(np.float64))
    assert error.max() < 1e-4, error.max()
print("ok")
"""
    result = run_python(
        "-c", script, NUMBA_CPU_FEATURES=without_avx512, NUMBA_CACHE_DIR=str(tmp_path)
    )
    assert result.stdout.strip() == "ok"


def test_register_tile_refuses_what_its_ir_is_not_written_for(rng):
    """The tile's IR walks rows with unit stride, in one float type: a non-contiguous operand or
    mixed dtypes are a typing error, not a wrong product; so are the packing's."""
    from numba.core.errors import TypingError

    w_hh = rng.standard_normal((16, 4)).astype(np.float32)
    panels = cpu.pack_panels(w_hh[None])[0]
    strided = rng.standard_normal((2, 8)).astype(np.float32)[:, ::2]
    with pytest.raises(TypingError):
        cpu.recurrent_panels(strided, panels, np.empty((2, 16), np.float32))
    with pytest.raises(TypingError):
        cpu.recurrent_panels(strided[:, :].copy(), panels, np.empty((2, 16), np.float64))
    # the packing's transposes: rows of the weights read with unit stride, row numbers in int64
    with pytest.raises(TypingError):
        cpu.pack_rows(w_hh[:, ::2], np.arange(16), np.empty((2, 2, 16), np.float32))
    with pytest.raises(TypingError):
        cpu.pack_rows(w_hh, np.arange(16, dtype=np.int32), np.empty((2, 4, 16), np.float32))


def test_plan_uses_threads_and_tiles_where_they_pay():
    from numba import get_num_threads

    blas, rows, panels = cpu.RECURRENT_BLAS, cpu.RECURRENT_DOT_TILE, cpu.RECURRENT_PANELS
    threads = get_num_threads()
    parallel = threads > 1
    steps = 1000

    def plan(batch, hidden, steps, directions=1):
        return cpu.plan_forward(batch, hidden, hidden, steps, directions)

    assert plan(0, 1024, steps)[1] == 1  # no rows: nothing to split
    assert plan(1, 128, steps) == (blas, 1, parallel)  # one row: BLAS's GEMV
    assert plan(2, 128, steps) == (panels, 1, parallel)  # a few rows share one thread's tile
    assert plan(32, 256, steps) == (panels, min(threads, 32), parallel)
    assert plan(4096, 512, steps) == (panels, threads, parallel)
    # too few steps to pay for packing W_hh
    row_steps = cpu.PANEL_MIN_ROW_STEPS
    assert plan(2, 256, row_steps // 2 - 1) == (rows, 1, parallel)
    assert plan(2, 256, row_steps // 2) == (panels, 1, parallel)
    narrow, row_steps = cpu.PANEL_NARROW_MAX_HIDDEN, cpu.PANEL_NARROW_MIN_ROW_STEPS  # packs fast
    assert plan(2, narrow, row_steps // 2 - 1)[0] == rows
    assert plan(2, narrow, row_steps // 2)[0] == panels
    assert plan(2, narrow + 1, row_steps // 2)[0] == rows
    if parallel:  # rows on threads wait for the packing: more row-steps a thread
        threaded = cpu.PANEL_NARROW_THREADED_MIN_ROW_STEPS
        assert plan(4 * threads, narrow, threaded // 4 - 1) == (rows, threads, True)
        assert plan(4 * threads, narrow, threaded // 4) == (panels, threads, True)
    # W_hh beyond the caches: split from two rows on (one row a thread: GEMV)
    assert plan(2, 1024, steps) == (panels if threads < 2 else blas, min(threads, 2), parallel)
    assert plan(4 * threads, 1024, steps) == (panels, threads, parallel)
    # the directions of a bidirectional layer take the threads first
    expected = (panels, max(1, min(threads // 2, 32)), parallel)
    assert plan(32, 256, steps, directions=2) == expected
    # too little work to pay for starting threads: all of it, or a direction, on one thread
    batch = 16 * threads  # 16 rows a thread when split
    split_steps = -(-cpu.PARTITION_MIN_MULTIPLY_ADDS // (batch * 4 * 32 * (32 + 32)))
    assert plan(batch, 32, split_steps - 1)[1] == 1
    assert plan(batch, 32, split_steps)[1] == threads
    # one step (a Stream's chunk) splits as a sequence does: a few rows' projection packs nothing
    assert plan(2 * threads, 512, 1)[1:] == (threads, parallel)
    assert plan(threads, 1024, 1)[1:] == (threads, parallel)
    threaded_steps = -(-cpu.PARALLEL_MIN_MULTIPLY_ADDS // (2 * 4 * 4 * 32 * (32 + 32)))
    assert plan(4, 32, threaded_steps - 1, directions=2)[1:] == (1, False)
    assert plan(4, 32, threaded_steps, directions=2)[1:] == (1, parallel)
    # two directions of a small model: side by side from enough steps on, whatever the work
    many = cpu.PARALLEL_DIRECTIONS_MIN_STEPS
    assert plan(1, 8, many - 1, directions=2)[2] is False
    assert plan(1, 8, many, directions=2)[2] == parallel
    assert plan(1, 8, 1000)[2] is False  # one direction: nothing to run beside it


@pytest.mark.parametrize("batch, partitions", [(1, 1), (7, 1), (7, 2), (9, 4), (64, 3)])
def test_length_order_sorts_each_slice_and_balances_them(rng, batch, partitions):
    lengths = rng.integers(0, 50, batch)
    order = cpu.length_order(lengths, partitions)
    assert sorted(order) == list(range(batch))
    starts = np.arange(partitions + 1) * batch // partitions
    slices = [lengths[order][a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    for part in slices:
        assert np.all(np.diff(part) <= 0), "descending within a slice"
    longest = [part.max() for part in slices if part.size]
    assert longest == list(np.sort(lengths)[::-1][: len(longest)]), "each slice gets a long row"
    equal = np.full(batch, 7)  # rows of one length stay where they are: nothing to copy
    np.testing.assert_array_equal(cpu.length_order(equal, partitions), np.arange(batch))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("threads", [False, True], ids=["calling-thread", "parallel-driver"])
def test_kernels_only_ever_see_contiguous_arrays(rng, batch_first, threads, monkeypatch):
    """A bounded set of compiled signatures: every path (lengths reorder rows, traces, layouts,
    LSTMP's projection, the parallel driver or not) hands the kernels C-contiguous arrays, never
    'A'-layout ones (a second signature each, and np.dot copying its operands), nor Optional
    ones (``cpu.direction_of``: a specialization of the worker of its own)."""
    if threads:
        threads_at_any_size(monkeypatch)
    model = ln.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=batch_first, seed=4)
    x = rng.standard_normal((4, 6, 3) if batch_first else (6, 4, 3)).astype(np.float32)
    model(x, lengths=[6, 2, 5, 1], return_gates=True)
    model(x, lengths=[6, 2, 5, 1])
    ln.LSTM(3, 5, bidirectional=True, proj_size=2, batch_first=batch_first, seed=4)(x)
    unidirectional = ln.LSTM(3, 5, num_layers=2, batch_first=batch_first, seed=4)
    for rows in (1, 3):  # the units split, when threads
        unidirectional(x[:rows] if batch_first else x[:, :rows], lengths=[3] * rows)
    kernels = [cpu.lstm_rows_forward, cpu.lstm_partitioned_forward, cpu.lstm_step_pointwise]
    kernels += [cpu.lstm_unit_split_forward, cpu.lstm_units_round, cpu.units_product]
    kernels += [cpu.pack_rows, cpu.recurrent_panels]
    for kernel in kernels:
        for signature in kernel.signatures:
            layouts = [t.layout for t in signature if hasattr(t, "layout")]
            assert "A" not in layouts, (kernel, signature)
            assert not any(isinstance(t, types.Optional) for t in signature), (kernel, signature)


def record_row_worker_argument(monkeypatch, position):
    """A list that gets argument ``position`` of every call of the row worker from Python
    (``cpu.lstm_rows_forward``), which still runs."""
    seen = []
    worker = cpu.lstm_rows_forward

    def recording_worker(*arguments):
        seen.append(arguments[position])
        return worker(*arguments)

    monkeypatch.setattr(cpu, "lstm_rows_forward", recording_worker)
    return seen


def test_models_without_projection_pass_no_projection_weights(rng, monkeypatch):
    """The row worker gets w_hr None where a model has no LSTMP projection, so that Numba compiles
    that specialization without the projection (≈ 1.5 s of a cold first call); the array where it
    has one."""
    seen = record_row_worker_argument(monkeypatch, 4)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    ln.LSTM(3, 5, seed=0)(x)
    ln.LSTM(3, 5, proj_size=2, seed=0)(x)
    assert seen[0] is None and seen[1].shape == (2, 5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_row_reads_w_hh_packed_from_enough_steps(rng, dtype, monkeypatch):
    """One row of one direction on the calling thread takes the register tile on packed W_hh
    from ``cpu.ONE_ROW_PANEL_MIN_STEPS`` steps on, where W_hh fits a core's L2 or BLAS runs on
    one thread, and matches the reference there; with fewer steps, or W_hh beyond L2 and BLAS
    on several threads, its product stays BLAS's (or the loop's)."""
    products = record_row_worker_argument(monkeypatch, 15)
    monkeypatch.setattr(ln.model, "MOST_REPLAYS", 0)  # every call planned: a replay keeps its plan
    model = ln.LSTM(6, 40, peepholes=True, dtype=dtype, seed=1)  # no units split: ONNX's cell
    least = cpu.ONE_ROW_PANEL_MIN_STEPS
    for steps in (least + 2, least + 3):  # the longest length decides: least − 1, least
        x = rng.standard_normal((1, steps, 6)).astype(dtype)
        y, (h_n, c_n) = model(x, lengths=[steps - 3])
        expected, (h_ref, c_ref) = reference.lstm_forward(
            x, model.state_dict(), lengths=[steps - 3]
        )
        assert_close(y, expected)
        assert_close(h_n, h_ref)
        assert_close(c_n, c_ref)
    monkeypatch.setattr(
        cpu, "cache_bytes", lambda level: 4 * 40 * 40 * np.dtype(dtype).itemsize - 1
    )
    monkeypatch.setattr(cpu, "blas_on_one_thread", lambda: False)
    model(x)
    monkeypatch.setattr(cpu, "blas_on_one_thread", lambda: True)
    y, (h_n, c_n) = model(x)
    expected, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict())
    assert_close(y, expected)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)
    assert products == [
        cpu.RECURRENT_BLAS, cpu.RECURRENT_PANELS, cpu.RECURRENT_BLAS, cpu.RECURRENT_PANELS
    ]  # fmt: skip


def test_blas_on_one_thread_reads_every_library_the_kernels_call(monkeypatch):
    """``cpu.blas_on_one_thread``: true where every BLAS library the kernels call runs one thread
    (as after ``set_num_threads(1)``, in a process of its own), false where one runs more or none
    is found (its threads unknown)."""
    result = run_python(
        "-c",
        "import lstm_numba as ln; from lstm_numba import cpu; ln.set_num_threads(1); "
        "print(cpu.blas_on_one_thread())",
    )
    assert result.stdout.strip() == "True"
    cases = [([1], True), ([1, 1], True), ([1, 2], False), ([4], False), ([], False)]
    for counts, expected in cases:
        functions = [(lambda count=count: count, None) for count in counts]
        monkeypatch.setattr(cpu, "_blas_thread_functions", lambda functions=functions: functions)
        assert cpu.blas_on_one_thread() is expected, counts


def test_one_row_of_two_directions_side_by_side_reads_w_hh_packed_from_twice_the_steps(
    rng, monkeypatch
):
    """Two directions of one row, a thread each (``cpu.lstm_partitioned_forward``), read W_hh
    packed from ``2 · cpu.ONE_ROW_PANEL_MIN_STEPS`` steps on (both directions packed first, on
    the calling thread), and match the reference there."""
    if get_num_threads() < 2:
        pytest.skip("two directions run side by side on two threads")
    products = []
    driver = cpu.lstm_partitioned_forward

    def recording_driver(*arguments):
        products.append(arguments[14])
        return driver(*arguments)

    monkeypatch.setattr(cpu, "lstm_partitioned_forward", recording_driver)
    model = ln.LSTM(6, 40, bidirectional=True, seed=1)
    least = 2 * cpu.ONE_ROW_PANEL_MIN_STEPS
    for steps in (least - 1, least):
        x = rng.standard_normal((1, steps, 6)).astype(np.float32)
        y, (h_n, c_n) = model(x)
        expected, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict())
        assert_close(y, expected)
        assert_close(h_n, h_ref)
        assert_close(c_n, c_ref)
    assert products == [cpu.RECURRENT_BLAS, cpu.RECURRENT_PANELS]


CONCURRENT_CALLS = """
import threading
import numba
import numpy as np
import lstm_numba
from lstm_numba import cpu

# the parallel driver even at these small shapes
cpu.PARALLEL_MIN_MULTIPLY_ADDS = cpu.PARTITION_MIN_MULTIPLY_ADDS = 0

model = lstm_numba.LSTM(8, 16, seed=0)
x = np.random.default_rng(0).standard_normal((8, 20, 8)).astype(np.float32)
expected = model(x)[0]
assert numba.threading_layer() == "workqueue", numba.threading_layer()
same = []


def calls():
    same.extend(np.array_equal(model(x)[0], expected) for _ in range(20))


threads = [threading.Thread(target=calls) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert same == [True] * 60, same
"""


def test_python_threads_may_call_a_model_at_once():
    """Under Numba's workqueue threading layer (its fallback where neither OpenMP nor TBB is
    installed), two threads launching parallel kernels at once abort the process; the model must
    survive three threads calling its parallel driver (B = 8 on 2 threads) together."""
    run_python("-c", CONCURRENT_CALLS, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="2")


FORKED_CALLS = """
import multiprocessing
import sys
import numba
import numpy as np
import lstm_numba
from lstm_numba import cpu

# the parallel driver even at these small shapes
cpu.PARALLEL_MIN_MULTIPLY_ADDS = cpu.PARTITION_MIN_MULTIPLY_ADDS = 0

x = np.random.default_rng(0).standard_normal((8, 20, 8)).astype(np.float32)
models = [lstm_numba.LSTM(8, 16, seed=0), lstm_numba.LSTM(8, 16, bidirectional=True, seed=0)]
try:
    expected = [model(x)[0] for model in models]  # the parallel driver: starts OpenMP
except ValueError as error:  # Numba found no OpenMP here
    print("SKIP", error)
    sys.exit(0)
assert numba.threading_layer() == "omp", numba.threading_layer()


def forward(k):
    return models[k](x)[0]


with multiprocessing.get_context("fork").Pool(2) as pool:
    results = pool.map_async(forward, [0, 1, 0, 1]).get(timeout=300)
for k, result in enumerate(results):
    np.testing.assert_allclose(result, expected[k % 2], rtol=1e-5, atol=1e-6)
"""


FORKED_WHILE_A_THREAD_RUNS_A_FORWARD = """
import os
import numpy as np
import lstm_numba
from lstm_numba import cpu
# the parallel driver even at these small shapes
cpu.PARALLEL_MIN_MULTIPLY_ADDS = cpu.PARTITION_MIN_MULTIPLY_ADDS = 0

model = lstm_numba.LSTM(8, 16, seed=0)
x = np.random.default_rng(0).standard_normal((8, 20, 8)).astype(np.float32)
expected = model(x)[0]
cpu._PARALLEL_FORWARD.acquire()  # as another thread of this process running a forward holds it
pid = os.fork()
if pid == 0:
    np.testing.assert_array_equal(model(x)[0], expected)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_process_forked_while_a_thread_runs_a_forward_may_call_a_model():
    """The parallel driver's lock is held by whichever thread runs a forward; a process forked
    meanwhile inherits it held, with no thread to release it, and must not wait on it forever.
    Under workqueue, the threading layer that lets the child run the parallel driver."""
    run_python(
        "-c",
        FORKED_WHILE_A_THREAD_RUNS_A_FORWARD,
        NUMBA_THREADING_LAYER="workqueue",
        NUMBA_NUM_THREADS="2",
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_processes_forked_after_openmp_started_may_call_a_model():
    """Numba terminates a process forked after GNU OpenMP started when it launches a parallel
    kernel (multiprocessing's "fork" pools hang on it); such a process must run the forward
    without one, and get the parent's result, batch split over threads and both directions."""
    result = run_python("-c", FORKED_CALLS, NUMBA_THREADING_LAYER="omp", NUMBA_NUM_THREADS="2")
    if result.stdout.startswith("SKIP"):
        pytest.skip(result.stdout)


BLAS_THREADS_IN_THE_DRIVER = """
import json
import os
import threading
import numpy as np
import lstm_numba  # first: nothing has loaded SciPy's BLAS yet, as in a user's fresh process
from lstm_numba import cpu
# the parallel driver even at these small shapes
cpu.PARALLEL_MIN_MULTIPLY_ADDS = cpu.PARTITION_MIN_MULTIPLY_ADDS = 0
import scipy
from threadpoolctl import threadpool_info

def blas_threads():
    return {
        os.path.realpath(i["filepath"]): i["num_threads"]
        for i in threadpool_info()
        if i["user_api"] == "blas"
    }

inside = []  # a call's BLAS threads inside the driver
driver = cpu.lstm_partitioned_forward

def recording_driver(*arguments):
    driver(*arguments)  # loads the BLAS its np.dot calls, if nothing had
    inside.append(blas_threads())

cpu.lstm_partitioned_forward = recording_driver
model = lstm_numba.LSTM(8, 16, seed=0)
x = np.zeros((8, 20, 8), np.float32)
model(x)
# then from another Python thread, as a server's worker threads call it
other = threading.Thread(target=model, args=(x,))
other.start()
other.join()
held = [os.path.realpath(library.filepath) for library in cpu._blas_threads()]
scipy_dir = os.path.realpath(os.path.dirname(scipy.__file__))
print(json.dumps({"inside": inside, "outside": blas_threads(), "held": held, "scipy": scipy_dir}))
"""


def test_blas_runs_one_thread_inside_each_thread_of_the_parallel_driver():
    """Each of the driver's threads calls BLAS for its rows; BLAS on all its threads in each would
    put threads² on the cores (the forward ran ≈ 2× slower). SciPy's BLAS, which Numba calls,
    runs one thread meanwhile, in a process that loads it only on the first forward, and when a
    second Python thread calls (threadpoolctl's setter ignores all but the first); a BLAS that
    NumPy bundles apart keeps its threads (no kernel calls it); where SciPy bundles none, every
    BLAS runs one thread."""
    result = run_python(
        "-c", BLAS_THREADS_IN_THE_DRIVER, NUMBA_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2"
    )
    threads = json.loads(result.stdout.splitlines()[-1])
    # threadpoolctl < 3.5 does not know SciPy's own OpenBLAS build (libscipy_openblas)
    assert threads["outside"], "threadpoolctl finds no BLAS: the driver cannot limit it"
    if max(threads["outside"].values()) < 2:
        pytest.skip(f"BLAS runs one thread here anyway: {threads['outside']}")
    assert len(threads["inside"]) == 2, "one call from the main thread, one from another"
    scipy_dir = threads["scipy"]
    for inside in threads["inside"]:
        assert inside.keys() == threads["outside"].keys(), threads
        scipys = {path for path in inside if path.startswith(scipy_dir)}
        held = scipys or set(inside)
        assert set(threads["held"]) == held, threads
        assert {inside[path] for path in held} == {1}, threads
        for path in set(inside) - held:
            assert inside[path] == threads["outside"][path], threads


BLAS_THREADS_AFTER_THE_DRIVER = """
import json
import os
import numpy as np
import lstm_numba
from lstm_numba import cpu

seen = []
worker = cpu.lstm_rows_forward

def recording_worker(*arguments):  # the row worker called on the calling thread
    seen.append(max(library.get_num_threads() for library in cpu._blas_threads()))
    worker(*arguments)

one_row = lstm_numba.LSTM(64, 64, seed=0)
two_directions = lstm_numba.LSTM(64, 64, bidirectional=True, seed=0)  # a direction a thread
x = np.zeros((1, 100, 64), np.float32)
two_directions(x)  # the driver compiled before the worker is patched (its global name)
cpu._numba_threads_ran = False  # as in a process where no driver has run yet
cpu.lstm_rows_forward = recording_worker
one_row(x)  # BLAS keeps its threads
two_directions(x)  # the driver
one_row(x)  # BLAS on one thread
cpu.cache_bytes = lambda level, base=None: 1024
one_row(x)  # W_hh beyond a core's L2: BLAS's threads
reader, writer = os.pipe()
if os.fork() == 0:  # a child has no OpenMP workers of its own spinning
    os.write(writer, b"1" if cpu._numba_threads_ran else b"0")
    os._exit(0)
os.wait()
print(json.dumps({"blas": seen, "in_child": int(os.read(reader, 1))}))
"""


def test_blas_keeps_its_threads_on_the_calling_thread_only_beyond_the_l2_after_a_driver():
    """After a parallel driver, OpenMP's spinning workers would stall BLAS's threads (a 0.16 ms
    one-row forward took ≈ 4 ms right after one): a layer on the calling thread whose W_hh fits a
    core's L2 runs BLAS on one thread, in a fresh process; not in a child forked after that
    (``cpu._note_fork``)."""
    result = run_python(
        "-c", BLAS_THREADS_AFTER_THE_DRIVER, NUMBA_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2"
    )
    seen = json.loads(result.stdout.splitlines()[-1])
    threads = seen["blas"]
    if threads[0] < 2:
        pytest.skip(f"BLAS runs one thread here anyway: {threads}")
    assert threads == [threads[0], 1, threads[0]], threads
    assert seen["in_child"] == 0, "a forked child has run no driver of its own"


def test_a_blas_that_threadpoolctl_does_not_know_is_reported(monkeypatch):
    """Without a BLAS controller the driver's threads would each run BLAS on all its threads:
    say so once, with the remedy."""

    class NoLibraries:
        lib_controllers = []

        def select(self, **_):
            return self

    monkeypatch.setattr(cpu, "ThreadpoolController", NoLibraries)
    cpu._blas_threads.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="finds no BLAS library"):
            cpu._blas_threads()
    finally:
        cpu._blas_threads.cache_clear()


THREAD_LIMIT = """
import contextlib
import json
import os
import numba
import numpy as np
import lstm_numba
from lstm_numba import cpu, reference

limit = int(os.environ["LIMIT"])
lstm_numba.set_num_threads(limit)  # first: nothing has loaded SciPy's BLAS yet
seen = {"drivers": [], "blas": [], "python_threads": 0}


run = cpu._run
drivers = (cpu.lstm_partitioned_forward, cpu.lstm_unit_split_forward)


def recording_run(kernel, arguments, context=None):
    def note():
        if kernel is cpu.lstm_rows_forward:  # a direction on the calling thread
            seen["blas"].append(sorted({get() for get, _ in cpu._blas_thread_functions()}))
        elif kernel in drivers:
            seen["drivers"].append(numba.get_num_threads())

    if context is None:
        note()
        return run(kernel, arguments)

    @contextlib.contextmanager
    def noting():  # inside the call's own context, as the kernel runs
        with context():
            note()
            yield

    return run(kernel, arguments, noting)


cpu._run = recording_run
pool = cpu.ThreadPoolExecutor


def recording_pool(*arguments):
    seen["python_threads"] += 1
    return pool(*arguments)


cpu.ThreadPoolExecutor = recording_pool
rng = np.random.default_rng(0)
# one row on the calling thread (BLAS's GEMV); the rows split, the units split and the
# directions side by side, each with ≥ 10⁶ multiply-adds
for batch, steps, hidden, bidirectional in ((1, 4, 64, False), (64, 20, 64, False),
                                            (2, 64, 128, False), (1, 40, 96, True)):
    model = lstm_numba.LSTM(hidden, hidden, bidirectional=bidirectional, seed=0)
    x = rng.standard_normal((batch, steps, hidden)).astype(np.float32)
    expected = reference.lstm_forward(x.astype(np.float64), model.state_dict())[0]
    np.testing.assert_allclose(model(x)[0], expected, rtol=1e-5, atol=1e-6)
# two rows of a bidirectional stack with low_memory: the directions side by side on threads of
# Python's (cpu.lstm_directions_recomputed), or one after the other
model = lstm_numba.LSTM(16, 32, num_layers=2, bidirectional=True, seed=0)
x = rng.standard_normal((2, 300, 16)).astype(np.float32)
expected = reference.lstm_forward(x.astype(np.float64), model.state_dict())[0]
np.testing.assert_allclose(model(x, low_memory=True)[0], expected, rtol=1e-5, atol=1e-6)
seen["after"] = [lstm_numba.get_num_threads(), numba.get_num_threads()]
seen["blas_after"] = sorted({get() for get, _ in cpu._blas_thread_functions()})
print(json.dumps(seen))
"""


@pytest.mark.parametrize("numba_threads, limit", [(2, 1), (3, 2)])
def test_set_num_threads_bounds_numba_and_blas_threads(numba_threads, limit):
    """``set_num_threads(n)``: no forward runs on more than n threads, Numba's and BLAS's (SciPy's,
    which the kernels call, loaded after the call): with n = 1 no driver runs, BLAS runs one
    thread on the calling thread, and a ``low_memory`` stack's directions take turns on it
    instead of a Python thread each; with n = 2 of 3, the drivers launch on 2 of Numba's
    threads and this thread's count is set back after; the results are the reference's."""
    result = run_python(
        "-c", THREAD_LIMIT, NUMBA_NUM_THREADS=str(numba_threads), OPENBLAS_NUM_THREADS="3",
        LIMIT=str(limit),
    )  # fmt: skip
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["after"] == [limit, numba_threads], seen
    assert seen["blas_after"] == [limit], seen
    assert seen["blas"][0] == [limit], seen  # the one row's GEMV; later ones ≤ limit
    assert max(count for counts in seen["blas"] for count in counts) == limit, seen
    if limit == 1:
        assert seen["drivers"] == [] and seen["python_threads"] == 0, seen
    else:
        assert len(seen["drivers"]) >= 3 and set(seen["drivers"]) == {limit}, seen
        assert seen["python_threads"] > 0, seen


@pytest.mark.parametrize(
    "threads, error", [(0, ValueError), (-1, ValueError), (10**6, ValueError),
                       (True, TypeError), (2.0, TypeError), ("2", TypeError)]
)  # fmt: skip
def test_set_num_threads_names_a_bad_count(threads, error):
    with pytest.raises(error, match="^threads: expected"):
        ln.set_num_threads(threads)
    assert cpu._thread_limit is None


WITHOUT_DISK_CACHE = """
import numpy as np
from numba.core import caching


def read_only(locator):
    raise OSError("read-only file system")


caching._CacheLocator.ensure_cache_path = read_only  # as a read-only install, no writable home
import lstm_numba
from lstm_numba import reference

model = lstm_numba.LSTM(4, 8, seed=0)
x = np.random.default_rng(0).standard_normal((8, 3, 4)).astype(np.float32)
expected = reference.lstm_forward(x.astype(np.float64), model.state_dict())[0]
np.testing.assert_allclose(model(x)[0], expected, rtol=1e-5, atol=1e-6)
"""


def test_without_a_writable_cache_directory_the_kernels_compile_in_memory():
    """Numba refuses ``cache=True`` on decoration (so on import) where it can write no cache
    (read-only package directory and home, as in some containers): the package must import, warn
    with the remedy, and run."""
    result = run_python("-W", "always", "-c", WITHOUT_DISK_CACHE)
    assert "set NUMBA_CACHE_DIR to a writable directory" in result.stderr, result.stderr


WITHOUT_JIT = """
import numpy as np
import lstm_numba
from lstm_numba import cpu, reference

model = lstm_numba.LSTM(4, 8, bidirectional=True, seed=0)
x = np.random.default_rng(0).standard_normal((4, 70, 4)).astype(np.float32)
assert cpu.plan_forward(4, 4, 8, 70)[0] == cpu.RECURRENT_DOT_TILE  # with the JIT: the register tile
expected = reference.lstm_forward(x.astype(np.float64), model.state_dict())[0]
np.testing.assert_allclose(model(x)[0], expected, rtol=1e-5, atol=1e-6)
assert model.warm_up() == 0  # nothing to compile
"""


def test_the_kernels_run_as_python_under_numba_disable_jit():
    """``NUMBA_DISABLE_JIT=1`` runs the kernels as Python, to step through them in a debugger;
    a shape whose plan is the register tile (an LLVM intrinsic) must run too; ``warm_up`` has
    nothing to compile."""
    run_python("-c", WITHOUT_JIT, NUMBA_DISABLE_JIT="1")


def test_no_test_patches_a_constant_that_kernels_compile_in():
    """Numba compiles a module's constants into the CPU kernels that read them, and the tests'
    Numba cache (conftest) keeps those kernels: a test that patched such a constant would leave
    kernels compiled with its value to later tests (a patched projection chunk once broke a
    bit-for-bit check of another file). No test names one (``monkeypatch.setattr(cpu,
    "NAME", ...)`` needs the name as a string)."""
    package = pathlib.Path(ln.__file__).parent
    compiled_in = set()
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        constants = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name) and target.id.isupper()
        }
        for node in ast.walk(tree):
            compiled = isinstance(node, ast.FunctionDef) and any(
                word in ast.unparse(decorator)
                for word in ("njit", "intrinsic", "overload", "vectorize")
                for decorator in node.decorator_list
            )  # on the CPU (the CUDA simulator reads the GPU's constants as it runs)
            if compiled:
                names = {name.id for name in ast.walk(node) if isinstance(name, ast.Name)}
                compiled_in |= names & constants
    assert {"PROJECTION_ROWS", "SMALL_PRODUCT_ROWS"} <= compiled_in  # the scan finds them
    this_test = sys._getframe().f_code.co_name
    patched = []
    for test in pathlib.Path(__file__).parent.glob("test_*.py"):
        for function in ast.parse(test.read_text()).body:
            if getattr(function, "name", None) == this_test:
                continue  # the names above
            patched += [
                (test.name, node.value)
                for node in ast.walk(function)
                if isinstance(node, ast.Constant) and node.value in compiled_in
            ]
    assert not patched, patched
