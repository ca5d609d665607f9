"""One time step of a stream, per library, in one process: lstm_numba's ``Stream`` (its model
not frozen and frozen) and its calls, ``torch.nn.LSTM`` and ONNX Runtime, each fed back its state.

    python benchmarks/stream.py                    # the shapes of docs/performance.md, item 69
    python benchmarks/stream.py --shapes 1,64,128 8,256,256 --threads 1
    python benchmarks/stream.py --planned          # and lstm_numba's steps without replays

For each B,I,H shape, a float32 ``LSTM(I, H)``, its frozen copy and torch's and ONNX Runtime's
copies of it (each when installed) take one (B, 1, I) chunk at a time, from the state their last
step left (lstm_numba also as calls of the model, ``y, state = model(chunk, state)``). The libraries
take ``--rounds`` turns, each after a pause in which the one before lets its idle threads sleep
(``PEER_IDLE_SECONDS``); a turn keeps the best of five loops' mean time a step. Printed: the medians
of the turns, in µs, and the ratios of each library's time to lstm_numba's stream's (> 1:
lstm_numba's stream is faster).
"""

import argparse
import copy
import time

import numpy as np

import lstm_numba
from lstm_numba import model as lstm_model
from lstm_numba.__main__ import PEER_IDLE_SECONDS

SHAPES = ["1,8,8", "1,32,64", "1,64,128", "1,128,256", "4,64,64", "8,256,256", "1,512,512"]


def stream_steps(model, x, threads=None, planned=False):
    """Library name → (version, zero-argument callable running one step of x (B, 1, I) from the
    state the last one left), for lstm_numba (its streams, not frozen and frozen, and its calls,
    ``call_step``) and each installed peer; the peers on ``threads`` threads, or their own
    count. With ``planned``, also lstm_numba's streams and calls planning every call instead of
    replaying (``planned_step``)."""
    batch, hidden = x.shape[0], model.hidden_size
    steps = {}
    for name, each in (("lstm_numba", model), ("lstm_numba frozen", model.freeze())):
        steps[name] = (lstm_numba.__version__, each.stream(batch).step)
    for name, each in (("lstm_numba, planned", model), ("lstm_numba frozen, planned", None)):
        if planned:  # a frozen copy of its own: the one above keeps the replays' workspaces
            planning = planned_step((each or model.freeze()).stream(batch).step)
            steps[name] = (lstm_numba.__version__, planning)
    steps["lstm_numba calls"] = (lstm_numba.__version__, call_step(model))
    if planned:  # a copy: its calls record nothing of the model's own
        planning = planned_step(call_step(copy.deepcopy(model)))
        steps["lstm_numba calls, planned"] = (lstm_numba.__version__, planning)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        if threads is not None:
            torch.set_num_threads(threads)
        torch_lstm = lstm_numba.to_torch(model)
        torch_state = [(torch.zeros(1, batch, hidden), torch.zeros(1, batch, hidden))]

        def torch_step(chunk):
            with torch.no_grad():
                y, torch_state[0] = torch_lstm(torch.from_numpy(chunk), torch_state[0])
            return y

        steps["torch"] = (torch.__version__, torch_step)
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None:
        exported = lstm_numba.to_onnx(model, batch_first=False)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            exported.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        zeros = np.zeros((1, batch, hidden), np.float32)
        feeds = {"initial_h": zeros, "initial_c": zeros}

        def onnxruntime_step(chunk):
            feeds["X"] = chunk.reshape(1, batch, -1)  # (T, B, I), T = 1
            y, feeds["initial_h"], feeds["initial_c"] = session.run(None, feeds)
            return y

        steps["onnxruntime"] = (onnxruntime.__version__, onnxruntime_step)
    return {name: (version, lambda step=step: step(x)) for name, (version, step) in steps.items()}


def call_step(model):
    """One step as ``y, state = model(chunk, state)``, the state fed back as torch's is: the
    model's own calls, which replay as a stream's do (docs/performance.md, item 69)."""
    state = [None]

    def step(chunk):
        y, state[0] = model(chunk, state[0])
        return y

    return step


def planned_step(step):
    """A stream's ``step`` with its replays off: ``MOST_REPLAYS`` set to 0 during each call
    (≈ 0.3 µs of its time), so that every chunk plans its calls (docs/performance.md, item 69)."""

    def run(chunk):
        saved, lstm_model.MOST_REPLAYS = lstm_model.MOST_REPLAYS, 0
        try:
            return step(chunk)
        finally:
            lstm_model.MOST_REPLAYS = saved

    return run


def mean_step_seconds(step, calls):
    """The best of five loops' mean seconds a call of ``step``, each loop ``calls`` calls."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="*", default=SHAPES, help="B,I,H shapes")
    parser.add_argument("--rounds", type=int, default=5, help="turns of each library (5)")
    parser.add_argument("--threads", type=int, help="threads of every library (default: theirs)")
    parser.add_argument(
        "--planned", action="store_true", help="also lstm_numba's streams planning every call"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        lstm_numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    header = None
    for text in args.shapes:
        batch, inputs, hidden = (int(v) for v in text.split(","))
        model = lstm_numba.LSTM(inputs, hidden, seed=0)
        x = rng.standard_normal((batch, 1, inputs), dtype=np.float32)
        steps = stream_steps(model, x, args.threads, args.planned)
        if header is None:
            header = [f"{name} {version}" for name, (version, _) in steps.items()]
            print("| (B, I, H) | " + " | ".join(f"{name} µs" for name in header) + " |")
            print("|---" * (len(header) + 1) + "|")
        calls = max(20, int(2e7 / (batch * 4 * hidden * (inputs + hidden) + 2e5)))
        for _, step in steps.values():
            step()  # compiles, packs, records
        turns = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, (_, step) in steps.items():
                time.sleep(PEER_IDLE_SECONDS)
                turns[name].append(mean_step_seconds(step, calls))
        medians = {name: float(np.median(times)) * 1e6 for name, times in turns.items()}
        ours = medians["lstm_numba"]
        cells = [
            f"{value:.3g}" + ("" if name == "lstm_numba" else f" ({value / ours:.2f}×)")
            for name, value in medians.items()
        ]
        print(f"| {(batch, inputs, hidden)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
