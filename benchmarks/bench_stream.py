"""Per-call cost of streaming one time step (lstm_numba's ``Stream`` against ``torch.nn.LSTM``
and ONNX Runtime called step by step, ``stream.stream_steps``), and the cost of gate traces."""

from .common import choose, model_and_input
from .stream import stream_steps


class StreamStep:
    """One step of a few rows, each library fed back its own state: up to five rows split their
    hidden units, eight their rows (items 43–47 of docs/performance.md); a frozen model's stream
    reads its weights packed once (item 68) and replays its kernel calls (item 69)."""

    params = (
        ["lstm_numba", "lstm_numba frozen", "torch", "onnxruntime"],
        choose([1, 4, 8], [2]),
        choose([128, 512, 1024], [16]),
    )
    param_names = ["library", "batch", "hidden"]

    def setup(self, library, batch, hidden):
        model, x = model_and_input(batch, 1, hidden, hidden)
        steps = stream_steps(model, x)
        if library not in steps:
            raise NotImplementedError(f"{library} is not installed")
        self.step = steps[library][1]
        self.step()  # warm-up: compile, pack, record

    def time_step(self, *_):
        self.step()


class GateTraces:
    """A forward with ``return_gates=True`` beside a plain one (target: at most 1.3×)."""

    params = (choose(["1,128,128,128", "32,128,256,256"], ["2,4,8,8"]), [False, True])
    param_names = ["shape", "return_gates"]

    def setup(self, shape, return_gates):
        self.model, self.x = model_and_input(*(int(v) for v in shape.split(",")))
        self.model(self.x, return_gates=return_gates)  # compile or load from the cache

    def time_forward(self, shape, return_gates):
        self.model(self.x, return_gates=return_gates)
