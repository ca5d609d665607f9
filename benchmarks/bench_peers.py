"""lstm_numba and its peers on the same shapes, side by side in ``asv compare`` and the HTML.

Peers that are not installed are skipped (``NotImplementedError`` in ``setup``, as asv expects).
"""

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
    )
    param_names = ["library", "shape"]
    timeout = 300

    def setup(self, library, shape):
        model, x = model_and_input(*(int(v) for v in shape.split(",")))
        calls = library_calls(model, x)
        if library not in calls:
            raise NotImplementedError(f"{library} is not installed")
        self.call = calls[library][1]
        self.call()  # warm-up: compile, allocate, pick kernels

    def time_forward(self, library, shape):
        self.call()
