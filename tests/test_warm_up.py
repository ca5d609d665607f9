"""``LSTM.warm_up``: every CPU kernel a model's calls can take, compiled before the first call;
``cpu.dry_run``, the forwards that note their kernels instead of running them."""

import threading

import numpy as np
import pytest
from conftest import assert_close
from numba.core.dispatcher import Dispatcher

import lstm_numba as ln
from lstm_numba import atomics, cpu, equations, reference, register_tile


def compiled_signatures():
    """How many signatures each of the package's compiled functions holds."""
    modules = (cpu, equations, register_tile, atomics)
    return {
        f"{module.__name__}.{name}": len(function.overloads)
        for module in modules
        for name, function in vars(module).items()
        if isinstance(function, Dispatcher)
    }


@pytest.mark.parametrize("bidirectional", [False, True])
def test_after_warm_up_no_call_compiles(rng, bidirectional):
    """Calls of every kind the plans tell apart (one row to many, one step to the directions in
    place, rows of one length or of many, in order or not, with the gates or not, with
    ``low_memory`` or not) compile nothing after ``warm_up(return_gates=True)``: without it, a
    process's first call of each compiles. (One direction takes the batch split from four rows
    on, two directions from one.)"""
    model = ln.LSTM(24, 96, num_layers=2, bidirectional=bidirectional, seed=3)
    assert model.warm_up(return_gates=True) > model.warm_up() > 0
    before = compiled_signatures()
    calls = [(1, 1), (1, 7), (2, 3), (3, 17), (4, 40), (5, 9), (6, 2), (7, 33), (16, 1), (9, 130)]
    calls += [(1, 44_000), (64, 700), (3, 15_000)]  # half of y ≥ 16 MiB: the directions in place
    for batch, steps in calls:
        x = rng.standard_normal((batch, steps, 24)).astype(np.float32)
        model(x)
        model(x, lengths=rng.integers(1, steps + 1, batch))
        if batch * steps < 1000:
            model(x, return_gates=True)
        if bidirectional and batch * steps < 100_000:  # in place at any size, recomputed or not
            model(x, low_memory=True)
            model(x, lengths=rng.integers(1, steps + 1, batch), low_memory=True)
    after = compiled_signatures()
    compiled = {name: count - before[name] for name, count in after.items() if count > before[name]}
    assert not compiled, compiled


def test_a_dry_run_computes_nothing_and_other_threads_compute(rng):
    model = ln.LSTM(8, 16, num_layers=2, seed=5)
    x = rng.standard_normal((3, 12, 8)).astype(np.float32)
    expected, _ = reference.lstm_forward(x, model.state_dict())
    computed = {}
    with cpu.dry_run() as run:
        _, (h_n, c_n) = model(x)
        other = threading.Thread(target=lambda: computed.update(y=model(x)[0]))
        other.start()
        other.join()
    assert not h_n.any() and not c_n.any(), "the kernels ran in the dry run"
    assert {kernel for kernel, _ in run.signatures} <= {
        cpu.lstm_rows_forward, cpu.lstm_partitioned_forward, cpu.lstm_unit_split_forward
    }  # fmt: skip
    assert run.signatures
    assert_close(computed["y"], expected)


def test_a_dry_run_in_halves_of_time_runs_both_directions_dry():
    """The reverse direction of ``cpu.lstm_directions_in_halves`` runs on a thread of its own:
    the dry run reaches it there (without, it would compute the layer's reverse direction)."""
    model = ln.LSTM(128, 128, num_layers=2, bidirectional=True, seed=6)
    x = np.zeros((1, 50_000, 128), np.float32)
    lengths = np.full(1, x.shape[1])
    w_hh = model._layers[1]["weight_hh"]
    if cpu.directions_in_place(w_hh, lengths, x.shape[1], True) != cpu.IN_HALVES:
        pytest.skip("the directions run in place in halves of time only on several threads")
    with cpu.dry_run():
        _, (h_n, _) = model(x)
    assert not h_n.any(), "a direction ran"
