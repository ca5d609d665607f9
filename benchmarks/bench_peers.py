"""lstm_numba and its peers on the same shapes, side by side in ``asv compare`` and the HTML,
each on its own threads or on one (asv runs each parameter set in a process of its own, and
``lstm_numba.set_num_threads`` holds for the process).

Peers that are not installed are skipped (``NotImplementedError`` in ``setup``, as asv expects).
"""

import lstm_numba

from .common import choose, model_and_input
from .compare import library_calls


class PeerForward:
    params = (
        ["lstm_numba", "torch", "onnxruntime"],
        choose(
            # small models first, where each call's own cost shows (docs/performance.md)
            ["1,1,8,8", "8,20,32,32", "1,128,128,128", "32,128,256,256", "256,64,512,512"],
            ["2,8,16,16"],
        ),
        choose(["all", "1"], ["1"]),
    )
    param_names = ["library", "shape", "threads"]
    timeout = 300

    def setup(self, library, shape, threads):
        threads = None if threads == "all" else int(threads)
        if threads is not None:
            lstm_numba.set_num_threads(threads)
        model, x = model_and_input(*(int(v) for v in shape.split(",")))
        calls = library_calls(model, x, threads=threads)
        if library not in calls:
            raise NotImplementedError(f"{library} is not installed")
        self.call = calls[library][1]
        self.call()  # warm-up: compile, allocate, pick kernels

    def time_forward(self, *_):
        self.call()
