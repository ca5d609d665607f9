"""The GPU path beside torch on CUDA (cuDNN); skipped without a usable GPU (``NotImplementedError``
in ``setup``, as asv expects), so the suite runs everywhere."""

from lstm_numba import dispatch

from .common import choose, model_and_input
from .compare import gpu_library_calls


class GpuForward:
    params = (
        ["lstm_numba", "torch", "torch TF32"],
        choose([1, 16, 256], [2]),
        choose([256, 1024], [16]),
    )
    param_names = ["library", "batch", "hidden"]
    timeout = 300

    def setup(self, library, batch, hidden):
        usable, reason = dispatch.cuda_status()
        if not usable:
            raise NotImplementedError(reason)
        model, x = model_and_input(batch, choose(256, 4), hidden, hidden)
        calls = gpu_library_calls(model, x)
        if library not in calls:
            raise NotImplementedError(f"{library} cannot use the GPU here")
        self.call = calls[library][1]
        self.call()  # warm-up: compile, upload, pick kernels

    def time_forward(self, *_):
        self.call()
