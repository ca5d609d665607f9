"""Shared pieces of the asv suite: parameter sets and inputs (timing helpers: ``compare``).

``LSTM_NUMBA_BENCH_SMOKE=1`` shrinks every parameter set to its smallest case, for the quick pass
CI runs (``tests/test_benchmarks.py``).
"""

import os

import numpy as np

import lstm_numba

SMOKE = os.environ.get("LSTM_NUMBA_BENCH_SMOKE") == "1"


def choose(full, smoke):
    """The full parameter list, or the smoke-test one under ``LSTM_NUMBA_BENCH_SMOKE=1``."""
    return smoke if SMOKE else full


def model_and_input(batch, steps, inputs, hidden, dtype="float32", **options):
    """A seeded model (``options``: ``LSTM``'s keyword arguments) and a random (B, T, I) input."""
    model = lstm_numba.LSTM(inputs, hidden, dtype=dtype, seed=0, **options)
    x = np.random.default_rng(0).standard_normal((batch, steps, inputs)).astype(dtype)
    return model, x
