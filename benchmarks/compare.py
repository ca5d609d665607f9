"""Time lstm_numba beside the NumPy reference, PyTorch and ONNX Runtime, in one process.

    python benchmarks/compare.py                      # the standard shapes, markdown table
    python benchmarks/compare.py --shapes 1,128,128,128 --repeats 20

Every library runs the same float32 one-layer LSTM (same weights, zero initial states) on the same
input; each time is the best of ``--repeats`` calls after one warm-up call. Ratios are
"other time / lstm_numba time" (>1: lstm_numba is faster). Torch and ONNX Runtime are skipped
when not installed. Inference only: ``torch.no_grad()``.
"""

import argparse
import os
import platform
import time

import numpy as np

import lstm_numba
from lstm_numba import reference
from lstm_numba.convert import to_onnx

STANDARD_SHAPES = [
    (1, 128, 128, 128),
    (1, 128, 512, 512),
    (32, 128, 256, 256),
    (256, 64, 512, 512),
    (64, 100, 1024, 1024),
]


def best_time(call, repeats):
    """Seconds of the fastest of ``repeats`` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def peers(model, x):
    """name → zero-argument callable running the same LSTM on ``x`` (B, T, I), for each peer
    that is installed."""
    calls = {}
    state = model.state_dict()
    calls["numpy reference (float64)"] = lambda: reference.lstm_forward(x, state)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch_lstm = torch.nn.LSTM(model.input_size, model.hidden_size, batch_first=True)
        torch_lstm.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        x_torch = torch.from_numpy(x)

        def run_torch():
            with torch.no_grad():
                return torch_lstm(x_torch)

        calls[f"torch {torch.__version__}"] = run_torch
    try:
        import onnxruntime
    except ImportError:
        pass
    else:
        session = onnxruntime.InferenceSession(
            to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        zeros = np.zeros((1, x.shape[0], model.hidden_size), np.float32)
        feeds = {"X": np.ascontiguousarray(x.transpose(1, 0, 2)), "initial_h": zeros}
        feeds["initial_c"] = zeros
        calls[f"onnxruntime {onnxruntime.__version__}"] = lambda: session.run(None, feeds)
    return calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="*",
        default=[",".join(map(str, s)) for s in STANDARD_SHAPES],
        help="B,T,I,H shapes (default: the five standard shapes)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the NumPy reference")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    rows = []
    for text in args.shapes:
        batch, steps, inputs, hidden = (int(v) for v in text.split(","))
        model = lstm_numba.LSTM(inputs, hidden, seed=0)
        x = np.random.default_rng(0).standard_normal((batch, steps, inputs), dtype=np.float32)
        ours = best_time(lambda: model(x), args.repeats)  # noqa: B023 (timed now)
        flops = 2 * batch * steps * 4 * hidden * (inputs + hidden)
        row = {"shape": (batch, steps, inputs, hidden), "ours": ours, "gflops": flops / ours / 1e9}
        for name, call in peers(model, x).items():
            if args.no_reference and name.startswith("numpy"):
                continue
            row[name] = best_time(call, max(1, args.repeats if "numpy" not in name else 1))
        rows.append(row)
        print(format_row(row), flush=True)
    print()
    print(markdown_table(rows))


def format_row(row):
    others = ", ".join(
        f"{name} {t * 1e3:.2f} ms ({t / row['ours']:.2f}x)"
        for name, t in row.items()
        if name not in ("shape", "ours", "gflops")
    )
    return f"{row['shape']}: lstm_numba {row['ours'] * 1e3:.2f} ms; {others}"


def markdown_table(rows):
    names = [n for n in rows[0] if n not in ("shape", "ours", "gflops")]
    header = ["(B, T, I, H)", "lstm_numba ms", "GFLOP/s"]
    header += [f"{n} ms (ratio)" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["shape"]), f"{row['ours'] * 1e3:.2f}", f"{row['gflops']:.0f}"]
        cells += [f"{row[n] * 1e3:.2f} ({row[n] / row['ours']:.2f}×)" for n in names if n in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
