"""The asv suite stays runnable: every benchmark is discovered and runs once on its smallest case.

This is not a performance test (nothing is asserted on time); it keeps ``benchmarks/`` from rotting.
"""

import importlib
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_close

import lstm_numba as ln
from lstm_numba import reference
from lstm_numba.__main__ import PEER_IDLE_SECONDS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def asv(*args, env=None):
    result = subprocess.run(
        ["asv", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def benchmark_script(name):
    """The module of ``benchmarks/{name}.py``, imported as its command line runs it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def asv_machine():
    if shutil.which("asv") is None:
        pytest.skip("asv is not installed (pip install -e '.[test]')")
    asv("machine", "--yes")


def test_asv_discovers_every_benchmark(asv_machine):
    output = asv("check", "--python=same")
    assert "No problems found" in output


def test_asv_suite_runs_once_on_smallest_cases(asv_machine):
    env = {**os.environ, "LSTM_NUMBA_BENCH_SMOKE": "1"}
    output = asv("run", "--python=same", "--quick", "--dry-run", "--show-stderr", env=env)
    lines = [line for line in output.splitlines() if "···" in line]
    assert not [line for line in lines if line.rstrip().endswith("failed")], output
    for name in (
        "TimeGates.time_lstm_step",
        "RecurrentProduct.time_product",
        "PointwiseStep.time_step",
        "Forward.time_forward",
        "ForwardLayersDirectionsLengths.time_forward",
        "ForwardProjected.time_forward",
        "StreamStep.time_step",
        "GateTraces.time_forward",
        "FirstCall.track_cold_cache",
        "WarmUp.track_warm_cache",
    ):
        assert any(name in line for line in lines), f"{name} did not run:\n{output}"


@pytest.mark.parametrize("rates", [(1e-9, 1e9), (1e9, 1e-9)], ids=["faster-at-end", "at-start"])
def test_compare_script_runs_in_rounds(capsys, monkeypatch, rates):
    """``benchmarks/compare.py``: every library in turn, ``--rounds`` times, each turn after a
    pause in which the library before lets its idle threads sleep; one table row; "of sgemm"
    against the faster of the GEMM rates measured at the start and at the end."""
    compare = benchmark_script("compare")
    measures = iter(rates)  # GFLOP/s, at the start and at the end
    monkeypatch.setattr(compare, "sgemm_gflops", lambda: next(measures))
    events = []
    monkeypatch.setattr(time, "sleep", events.append)
    timed = compare.best_seconds
    monkeypatch.setattr(compare, "best_seconds", lambda *a: events.append("turn") or timed(*a))
    compare.main(["--shapes", "2,3,4,5", "--repeats", "1", "--rounds", "2", "--no-reference"])
    libraries = 1 + ("torch" in sys.modules) + ("onnxruntime" in sys.modules)
    assert events == [compare.PEER_IDLE_SECONDS, "turn"] * 2 * libraries, events
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("| (2, 3, 4, 5) |"), lines
    assert lines[-3].startswith("| (B, T, I, H) | lstm_numba ms |"), lines
    assert lines[-1].split("|")[4].strip() == "0%", lines[-1]  # not the 1e-9 GFLOP/s measure


def test_compare_script_times_a_frozen_model(capsys, monkeypatch):
    """``compare.py --freeze``: lstm_numba's model frozen, and the header says so."""
    compare = benchmark_script("compare")
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    frozen = []
    freeze = compare.lstm_numba.LSTM.freeze
    monkeypatch.setattr(
        compare.lstm_numba.LSTM, "freeze", lambda model: frozen.append(freeze(model)) or frozen[-1]
    )
    compare.main(["--shapes", "2,3,4,5", "--repeats", "1", "--no-reference", "--freeze"])
    lines = capsys.readouterr().out.splitlines()
    assert any("lstm_numba's model frozen," in line for line in lines), lines
    assert lines[-1].startswith("| (2, 3, 4, 5) |"), lines
    assert len(frozen) == 1 and frozen[0]._kept_panels  # the frozen model ran, and packed


def test_frozen_script_times_both_models(capsys):
    """``benchmarks/frozen.py``: a row a shape, both models' times and their ratio."""
    frozen = benchmark_script("frozen")
    frozen.main(["--shapes", "2,3,4,5", "3,1,4,64", "--rounds", "2", "--states"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| (B, T, I, H) | not frozen ms | frozen ms | frozen / not |", lines
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["(2, 3, 4, 5)", "(3, 1, 4, 64)"]
    for line in lines[2:]:
        plain, packed, ratio = (float(cell.strip(" ×")) for cell in line.split("|")[2:5])
        assert abs(ratio - plain / packed) < 0.01 * ratio + 0.006, line


def test_stream_script_steps_every_library_through_one_sequence(capsys, monkeypatch):
    """``benchmarks/stream.py``: each library's step (lstm_numba's streams, frozen and not, and
    the installed peers) carries its own state, so that steps of one chunk make the sequence of
    it repeated, as the reference computes it; then a row a shape of medians and ratios."""
    stream = benchmark_script("stream")
    model = ln.LSTM(5, 16, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 5), dtype=np.float32)
    expected = reference.model_forward(model, np.repeat(x, 3, axis=1))[0]
    steps = stream.stream_steps(model, x, planned=True)
    ours = {"lstm_numba", "lstm_numba frozen", "lstm_numba, planned", "lstm_numba frozen, planned"}
    assert ours | {"lstm_numba calls", "lstm_numba calls, planned"} <= set(steps)
    for _, step in steps.values():
        ys = [np.asarray(step()).reshape(2, 1, 16) for _ in range(3)]  # ONNX's Y: (T, D, B, H)
        assert_close(np.concatenate(ys, axis=1), expected)
    monkeypatch.setattr(stream, "PEER_IDLE_SECONDS", 0)
    stream.main(["--shapes", "2,5,16", "1,3,24", "--rounds", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| (B, I, H) | lstm_numba "), lines
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["(2, 5, 16)", "(1, 3, 24)"]
    for line in lines[2:]:
        ours = float(line.split("|")[2])
        for cell in line.split("|")[3:-1]:
            value, ratio = cell.split()
            ratio = float(ratio.strip("(×)"))  # of values rounded to 3 digits
            assert abs(ratio - float(value) / ours) < 0.012 * ratio + 0.006, line


def test_compare_script_runs_on_the_threads_given():
    """``compare.py --threads 1`` (in a fresh process: ``lstm_numba.set_num_threads`` holds for
    the process): the header says so and the table has its row."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--shapes", "2,3,4,5",
         "--repeats", "1", "--no-reference", "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.endswith(", threads=1") for line in lines), lines
    assert lines[-1].startswith("| (2, 3, 4, 5) |"), lines


@pytest.mark.parametrize("states", [False, True])
def test_compare_libraries_compute_the_same_forward(rng, states):
    """``benchmarks/compare.py`` times every library on the same forward: the same weights,
    lengths and (``--states``) initial states, so each one's final h agrees with lstm_numba's."""
    compare = benchmark_script("compare")
    model = ln.LSTM(4, 5, bidirectional=True, seed=1)
    x = rng.standard_normal((3, 6, 4), dtype=np.float32)
    lengths = np.array([6, 4, 5])
    hx = tuple(rng.standard_normal((2, 3, 5), dtype=np.float32) for _ in "hc") if states else None
    results = {
        name: call() for name, (_, call) in compare.library_calls(model, x, lengths, hx).items()
    }
    final_h = {  # each library's h_n (2, B, H) in what its call returns
        "numpy reference (float64)": lambda result: result[1][0],
        "torch": lambda result: result[1][0].numpy(),
        "onnxruntime": lambda result: result[1],  # Y, Y_h, Y_c
    }
    ours = results.pop("lstm_numba")[1][0]
    assert np.abs(ours).max() > 0.01
    for name, result in results.items():
        assert_close(ours, final_h[name](result), np.float32)


def test_memory_script_prints_both_calls(capsys, one_numba_thread):
    """``benchmarks/memory.py``: one row a shape, the peak ratio and the times of the default and
    the ``low_memory`` call (two layers of one row, whose default holds half of y more). On one
    thread: on two, each direction's workspace (its projection of every step at this size, more
    than half of y) counts in the peak only where the threads' calls overlap in time, so the
    ratios moved between runs (2.87–3.98 and 2.32–2.89 over 40 calls each), once level."""
    memory = benchmark_script("memory")
    memory.main(["--shapes", "1,400,4,8", "--repeats", "2", "--lengths", "--time-major"])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| (1, 400, 4, 8) |"), row
    default, low_memory = map(float, row.split("|")[2].split("→"))
    assert low_memory < default, row


def test_throughput_plot_script_writes_a_png(tmp_path, capsys, monkeypatch):
    """``benchmarks/plot_throughput.py``: one rate a library and batch size, each timed after a
    pause (the other library's idle threads asleep), and the PNG; its pyplot figure closed after
    (``main`` called in a process that goes on, as here)."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    pauses = []
    monkeypatch.setattr(time, "sleep", pauses.append)

    monkeypatch.syspath_prepend(ROOT / "benchmarks")  # its imports, as its command line has them
    plot_throughput = benchmark_script("plot_throughput")
    output = tmp_path / "throughput.png"
    arguments = ["--steps", "3", "--size", "4", "--batches", "1,2", "--rounds", "1"]
    figures = plt.get_fignums()
    plot_throughput.main([*arguments, "--output", str(output)])
    lines = capsys.readouterr().out.splitlines()
    rates = sum(line.startswith("B=") for line in lines)
    assert rates == 2 * (1 + ("torch" in "".join(lines)))
    assert len(pauses) == rates and set(pauses) == {PEER_IDLE_SECONDS}, pauses
    assert output.read_bytes().startswith(b"\x89PNG")
    assert plt.get_fignums() == figures
