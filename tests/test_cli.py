"""``python -m lstm_numba`` (its options checked in process, its runs each in a fresh process) and
the on-disk kernel cache."""

import pytest
from conftest import run_python

from lstm_numba.__main__ import main


def test_main_job_checks_and_times():
    out = run_python(
        "-m", "lstm_numba", "--batch", "3", "--steps", "4", "--input-size", "5",
        "--hidden-size", "6", "--repeats", "2",
    ).stdout  # fmt: skip
    assert "check against the float64 reference" in out and "OK" in out
    assert "first call (compile or cache load)" in out
    assert "sequences/s" in out


def test_main_job_with_layers_and_directions():
    out = run_python(
        "-m", "lstm_numba", "--batch", "2", "--steps", "3", "--input-size", "4",
        "--hidden-size", "5", "--num-layers", "2", "--bidirectional", "--repeats", "1",
    ).stdout  # fmt: skip
    assert "num_layers=2" in out and "bidirectional=True" in out and "OK" in out


def test_main_job_runs_without_docstrings():
    """``python -OO`` strips docstrings, which the command line's help is built from."""
    out = run_python("-OO", "-m", "lstm_numba", "--help").stdout
    assert "--hidden-size" in out


@pytest.mark.parametrize("option, value", [("--batch", "0"), ("--steps", "-1"), ("--repeats", "x")])
def test_main_job_refuses_sizes_below_one(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main([option, value])
    assert exit_info.value.code == 2
    assert (
        f"argument {option}: expected a positive integer, got '{value}'" in capsys.readouterr().err
    )


CALL_AND_REPORT_CACHE = """
import numpy as np, lstm_numba as ln
from lstm_numba import cpu
ln.LSTM(3, 4, dtype=np.float64)(np.zeros((2, 5, 3)))
print(sum(cpu.lstm_rows_forward.stats.cache_hits.values()))
"""


def test_second_process_loads_kernels_from_cache():
    run_python("-c", CALL_AND_REPORT_CACHE)  # compiles and saves, unless a cache exists
    assert int(run_python("-c", CALL_AND_REPORT_CACHE).stdout.strip().splitlines()[-1]) >= 1


def test_import_leaves_the_reference_and_scipy_special_unloaded():
    """``lstm_numba.reference`` loads ``scipy.special`` (≈ 0.3 s), which no forward needs: it is
    imported on first use, and works then."""
    out = run_python(
        "-c",
        "import sys, lstm_numba; print('scipy.special' in sys.modules); "
        "print(lstm_numba.reference.lstm_forward.__name__)",
    ).stdout
    assert out.split() == ["False", "lstm_forward"]
