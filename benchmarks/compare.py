"""Time lstm_numba beside the NumPy reference, PyTorch and ONNX Runtime, in one process.

    python benchmarks/compare.py                      # the standard shapes, markdown table
    python benchmarks/compare.py --shapes 1,128,128,128 --repeats 20

Every library runs the same float32 one-layer LSTM (same weights, zero initial states) on the same
input; each time is the best of ``--repeats`` calls after one warm-up call. Ratios are
"other time / lstm_numba time" (>1: lstm_numba is faster). "of sgemm" is lstm_numba's rate as a
fraction of the float32 GEMM rate of the BLAS it calls, measured at the start. Torch and ONNX
Runtime are skipped when not installed. Inference only: ``torch.no_grad()``.

The asv suite (``benchmarks/bench_*.py``) imports its timing helpers from here.
"""

import argparse
import os
import platform
import time

import numpy as np
from numba import njit

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


def best_seconds(call, repeats=5):
    """Seconds of the fastest of ``repeats`` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def forward_flops(batch, steps, inputs, hidden):
    """2 × the multiply-adds of a forward's two matrix products: 2·B·T·4H·(I + H)."""
    return 2 * batch * steps * 4 * hidden * (inputs + hidden)


@njit
def _gemm(a, b, out):
    np.dot(a, b, out)


def sgemm_gflops(size=2048):
    """float32 GEMM rate (GFLOP/s) of the BLAS the kernels call (SciPy's, through ``@njit``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    return 2 * size**3 / best_seconds(lambda: _gemm(a, b, out), repeats=3) / 1e9


def library_calls(model, x):
    """Library name → (version, zero-argument callable running ``model``'s LSTM on x (B, T, I)),
    for lstm_numba, the NumPy reference and each peer that is installed."""
    state = model.state_dict()
    calls = {
        "lstm_numba": (lstm_numba.__version__, lambda: model(x)),
        "numpy reference (float64)": (np.__version__, lambda: reference.lstm_forward(x, state)),
    }
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

        calls["torch"] = (torch.__version__, run_torch)
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
        calls["onnxruntime"] = (onnxruntime.__version__, lambda: session.run(None, feeds))
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

    sgemm = sgemm_gflops()
    blas = os.environ.get("OPENBLAS_CORETYPE", "unset")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; OPENBLAS_CORETYPE={blas}")
    print(f"float32 GEMM (2048³) through @njit np.dot: {sgemm:.0f} GFLOP/s")
    rows, versions = [], {}
    for text in args.shapes:
        batch, steps, inputs, hidden = (int(v) for v in text.split(","))
        model = lstm_numba.LSTM(inputs, hidden, seed=0)
        x = np.random.default_rng(0).standard_normal((batch, steps, inputs), dtype=np.float32)
        row = {"shape": (batch, steps, inputs, hidden)}
        for name, (version, call) in library_calls(model, x).items():
            if args.no_reference and name.startswith("numpy"):
                continue
            versions[name] = version
            row[name] = best_seconds(call, 1 if name.startswith("numpy") else args.repeats)
        row["gflops"] = forward_flops(*row["shape"]) / row["lstm_numba"] / 1e9
        rows.append(row)
        print(format_row(row), flush=True)
    print()
    print(markdown_table(rows, versions, sgemm))


def _peers(row):
    return [name for name in row if name not in ("shape", "gflops", "lstm_numba")]


def format_row(row):
    ours = row["lstm_numba"]
    others = ", ".join(f"{n} {row[n] * 1e3:.2f} ms ({row[n] / ours:.2f}x)" for n in _peers(row))
    return f"{row['shape']}: lstm_numba {ours * 1e3:.2f} ms; {others}"


def markdown_table(rows, versions, sgemm):
    names = _peers(rows[0])
    header = ["(B, T, I, H)", "lstm_numba ms", "GFLOP/s", "of sgemm"]
    header += [f"{n} {versions[n]} ms (ratio)" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ours = row["lstm_numba"]
        cells = [str(row["shape"]), f"{ours * 1e3:.2f}", f"{row['gflops']:.0f}"]
        cells.append(f"{row['gflops'] / sgemm:.0%}")
        cells += [f"{row[n] * 1e3:.2f} ({row[n] / ours:.2f}×)" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
