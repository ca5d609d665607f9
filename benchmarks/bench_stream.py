"""Per-call cost of streaming one time step (lstm_numba's ``Stream`` against ``torch.nn.LSTM``
called step by step), and the cost of gate traces."""

from .common import choose, model_and_input


class StreamStep:
    """One step of a few rows: up to five split their hidden units, eight their rows (items
    43–47 of docs/performance.md); a frozen model's read its weights packed once (item 68)."""

    params = (
        ["lstm_numba", "lstm_numba frozen", "torch"],
        choose([1, 4, 8], [2]),
        choose([128, 512, 1024], [16]),
    )
    param_names = ["library", "batch", "hidden"]

    def setup(self, library, batch, hidden):
        model, x = model_and_input(batch, 1, hidden, hidden)
        if library.startswith("lstm_numba"):
            stream = (model.freeze() if library.endswith("frozen") else model).stream(batch)
            self.step = lambda: stream.step(x)
        else:
            try:
                import torch
            except ImportError as error:
                raise NotImplementedError("torch is not installed") from error
            lstm = torch.nn.LSTM(hidden, hidden, batch_first=True)
            x_torch = torch.from_numpy(x)
            state = [(torch.zeros(1, batch, hidden), torch.zeros(1, batch, hidden))]

            def step():
                with torch.no_grad():
                    _, state[0] = lstm(x_torch, state[0])

            self.step = step
        self.step()  # warm-up

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
