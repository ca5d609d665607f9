"""First-call time in a new process: compiling (cold cache) and loading (warm cache)."""

import os
import subprocess
import sys
import tempfile

FIRST_CALL = """
import time, numpy as np
start = time.perf_counter()
import lstm_numba
model = lstm_numba.LSTM(16, 32)
model(np.zeros((8, 5, 16), np.float32))
print(time.perf_counter() - start)
"""


def first_call_seconds(cache_dir):
    """Seconds from ``import lstm_numba`` to the end of a first forward, in a new process whose
    Numba cache lives in ``cache_dir``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    result = subprocess.run(
        [sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True
    )
    return float(result.stdout.split()[-1])


class FirstCall:
    timeout = 600
    repeat = 1
    number = 1

    def track_cold_cache(self):
        with tempfile.TemporaryDirectory() as cache_dir:
            return first_call_seconds(cache_dir)

    track_cold_cache.unit = "seconds"

    def track_warm_cache(self):
        with tempfile.TemporaryDirectory() as cache_dir:
            first_call_seconds(cache_dir)
            return first_call_seconds(cache_dir)

    track_warm_cache.unit = "seconds"
