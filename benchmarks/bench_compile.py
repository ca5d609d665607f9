"""First-call time in a new process: compiling (cold cache) and loading (warm cache); and
``LSTM.warm_up``, every kernel a model's calls can take, the same two ways."""

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


WARM_UP = """
import time
import lstm_numba
model = lstm_numba.LSTM(16, 32)
start = time.perf_counter()
model.warm_up()
print(time.perf_counter() - start)
"""


def first_call_seconds(cache_dir, script=FIRST_CALL):
    """Seconds ``script`` prints, from ``import lstm_numba`` to the end of a first forward unless
    it says otherwise, in a new process whose Numba cache lives in ``cache_dir``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
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


class WarmUp:
    """``model.warm_up()`` in a new process (docs/index.md, "Deploying"): on an empty cache, where
    it compiles every kernel the model's calls can take (once, in ``setup_cache``), and on that
    cache, where it runs the plans dry and loads them."""

    timeout = 900
    repeat = 1
    number = 1

    def setup_cache(self):
        # in the working directory asv gives setup_cache, which it removes after the run
        cache_dir = os.path.abspath("numba-cache")
        return {"cache_dir": cache_dir, "cold": first_call_seconds(cache_dir, WARM_UP)}

    def track_cold_cache(self, cached):
        return cached["cold"]

    track_cold_cache.unit = "seconds"

    def track_warm_cache(self, cached):
        return first_call_seconds(cached["cache_dir"], WARM_UP)

    track_warm_cache.unit = "seconds"
