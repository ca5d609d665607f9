"""Time lstm_numba beside the NumPy reference, PyTorch and ONNX Runtime, in one process.

    python benchmarks/compare.py                      # the standard shapes, markdown table
    python benchmarks/compare.py --shapes 1,128,128,128 --repeats 20
    python benchmarks/compare.py --num-layers 2 --bidirectional --lengths
    python benchmarks/compare.py --device cuda        # GPU: lstm_numba vs torch (cuDNN)
    python benchmarks/compare.py --freeze --states --shapes 8,1,512,512  # a frozen model

Every library runs the same float32 LSTM (same weights, zero initial states; one layer unless
``--num-layers``, bidirectional with ``--bidirectional``) on the same input, with random lengths in
[T/2, T] under ``--lengths`` (torch: a packed sequence; ONNX Runtime: ``sequence_lens``); each time
is the best of ``--repeats`` calls after one warm-up call (with ``--rounds N``, the libraries
take N turns and each keeps its best), each turn after a pause in which the library before lets
its idle threads sleep (``PEER_IDLE_SECONDS``; ONNX Runtime's spin, item 67). Ratios are
"other time / lstm_numba time" (>1: lstm_numba is faster). "of sgemm" is lstm_numba's rate as a
fraction of the float32 GEMM rate of the BLAS it calls, the faster of two measures, at the start
and at the end (the machine's speed drifts: one measure read ≈ half the rate once). Torch and ONNX
Runtime are skipped when not installed. Inference only: ``torch.no_grad()``. With ``--freeze``,
lstm_numba runs the model frozen (``LSTM.freeze``: its weights packed once, as ONNX Runtime's
session packs its own).

With ``--device cuda`` the weights and x live on the GPU before timing (``model.to("cuda")``,
``cuda.to_device``; torch: ``.cuda()``), every call ends with a device synchronisation, the peer
is torch on CUDA (cuDNN) in float32 and, as "torch TF32", with torch's default TF32 tensor-core
math, and "of sgemm" is relative to torch's float32 matmul (cuBLAS, TF32 off)
on 4096³ when torch can use the GPU.

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
from lstm_numba.__main__ import PEER_IDLE_SECONDS
from lstm_numba.convert import to_onnx

STANDARD_SHAPES = [
    (1, 128, 128, 128),
    (1, 128, 512, 512),
    (32, 128, 256, 256),
    (256, 64, 512, 512),
    (64, 100, 1024, 1024),
]

GPU_SHAPES = STANDARD_SHAPES + [
    (batch, 256, hidden, hidden) for batch in (1, 4, 16) for hidden in (256, 512, 1024)
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


def forward_flops(
    batch, steps, inputs, hidden, num_layers=1, directions=1, proj_size=0, initial_states=False
):  # fmt: skip
    """2 × the multiply-adds of a forward's matrix products: 2·B·4H·(T·I + T'·H) per layer and
    direction, T' = T − 1 from zero initial states (the first step's recurrent product, W_hh · 0,
    is not computed), T with ``initial_states``; the input size above the first layer is D·H.
    With a projection (P > 0), 2·B·(4H·(T·I + T'·P) + T·H·P), the input size above the first
    layer D·P."""
    out = proj_size or hidden
    layer_inputs = inputs + (num_layers - 1) * directions * out
    recurrent_steps = steps if initial_states else steps - 1
    gates = 4 * hidden * (steps * layer_inputs + num_layers * recurrent_steps * out)
    per_row = gates + num_layers * steps * hidden * proj_size
    return 2 * batch * directions * per_row


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


def machine_description():
    """The CPU as LLVM names it (what the kernels are compiled for), the core count, and the BLAS
    that the kernels call (SciPy's) with the kernel set it picked for this CPU."""
    from llvmlite import binding
    from threadpoolctl import threadpool_info

    libraries = [info for info in threadpool_info() if info["user_api"] == "blas"]
    scipy_blas = [info for info in libraries if "scipy.libs" in info["filepath"]] or libraries
    blas = "no BLAS loaded yet"
    if scipy_blas:
        info = scipy_blas[0]
        blas = f"{info['internal_api']} {info['version']} ({info.get('architecture')} kernels)"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f"{platform.machine()} {binding.get_host_cpu_name()}, {os.cpu_count()} cores; {blas}" + (
        f", OPENBLAS_CORETYPE={forced}" if forced else ""
    )


def library_calls(model, x, lengths=None, hx=None, threads=None):
    """Library name → (version, zero-argument callable running ``model`` on x (B, T, I) with
    ``lengths`` (B,) or None from the initial states ``hx`` (h0, c0) or zeros), for lstm_numba,
    the NumPy reference and each installed peer; the peers on ``threads`` threads, or their own
    count (lstm_numba's: ``lstm_numba.set_num_threads``)."""
    state = model.state_dict()
    calls = {
        "lstm_numba": (lstm_numba.__version__, lambda: model(x, hx, lengths=lengths)),
        "numpy reference (float64)": (
            np.__version__,
            lambda: reference.lstm_forward(x, state, hx, lengths=lengths),
        ),
    }
    try:
        import torch
    except ImportError:
        pass
    else:
        if threads is not None:
            torch.set_num_threads(threads)
        calls["torch"] = (torch.__version__, torch_call(torch, model, x, lengths, "cpu", hx))
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None and not model.proj_size:  # ONNX's LSTM has no projection
        exported = to_onnx(model, sequence_lens=lengths is not None,
                           initial_states=hx is not None, batch_first=False)  # fmt: skip
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            exported.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        feeds = {"X": np.ascontiguousarray(x.transpose(1, 0, 2))}
        if hx is not None:
            feeds["initial_h"], feeds["initial_c"] = hx
        if lengths is not None:
            feeds["sequence_lens"] = lengths.astype(np.int32)
        calls["onnxruntime"] = (onnxruntime.__version__, lambda: session.run(None, feeds))
    return calls


def torch_call(torch, model, x, lengths, device, hx=None):
    """A callable running ``torch.nn.LSTM`` with ``model``'s configuration and weights on x
    (B, T, I) on ``device`` from the initial states ``hx`` (h0, c0) or zeros; lengths as a
    packed sequence; synchronised on CUDA."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch_lstm = lstm_numba.to_torch(model).to(device)  # batch_first, as x
    x_torch = torch.from_numpy(x).to(device)
    hx_torch = None if hx is None else tuple(torch.from_numpy(a).to(device) for a in hx)

    def run():
        with torch.no_grad():
            if lengths is None:
                out = torch_lstm(x_torch, hx_torch)
            else:
                packed = pack_padded_sequence(
                    x_torch, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
                )
                out = torch_lstm(packed, hx_torch)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def gpu_library_calls(model, x, lengths=None, hx=None):
    """As ``library_calls``, on the GPU: lstm_numba's CUDA kernels and torch on CUDA (cuDNN)."""
    from numba import cuda

    model.to("cuda")
    x_device = cuda.to_device(x)
    hx_device = None if hx is None else tuple(cuda.to_device(a) for a in hx)

    def run_lstm_numba():
        out = model(x_device, hx_device, lengths=lengths, device="cuda")
        cuda.synchronize()
        return out

    calls = {"lstm_numba": (lstm_numba.__version__, run_lstm_numba)}
    try:
        import torch
    except ImportError:
        return calls
    if torch.cuda.is_available():
        version = f"{torch.__version__} cuDNN {torch.backends.cudnn.version()}"
        for name, tf32 in (("torch", False), ("torch TF32", True)):
            call = torch_call(torch, model, x, lengths, "cuda", hx)
            calls[name] = (version, _with_cudnn_tf32(torch, call, tf32))
    return calls


def _with_cudnn_tf32(torch, call, allowed):
    """``call`` with cuDNN's TF32 tensor-core math on or off (torch's default: on, which rounds
    the float32 products' inputs to 10-bit mantissas; off, cuDNN computes in float32 as we do)."""

    def run():
        torch.backends.cudnn.allow_tf32 = allowed
        return call()

    return run


def torch_on_cuda():
    """torch with its float32 matmuls in float32 (TF32 off), or None where torch cannot use a
    GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def gpu_sgemm_gflops(size=4096):
    """float32 matmul rate (GFLOP/s) of cuBLAS through torch, TF32 off; None without it."""
    torch = torch_on_cuda()
    if torch is None:
        return None
    a = torch.randn(size, size, device="cuda")
    b = torch.randn(size, size, device="cuda")

    def matmul():
        torch.matmul(a, b)
        torch.cuda.synchronize()

    return 2 * size**3 / best_seconds(matmul, repeats=5) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="*",
        help="B,T,I,H shapes (default: the five standard shapes; on cuda also B = 1, 4, 16 × "
        "H = 256, 512, 1024 at T = 256)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time every library this many times in turn, keeping each one's best (the "
        "machine's speed drifts: turns spread that over all of them)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the NumPy reference")
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument(
        "--lengths", action="store_true", help="random sequence lengths in [T/2, T]"
    )
    parser.add_argument(
        "--proj-size", type=int, default=0, help="LSTMP's projection size P (ONNX has none)"
    )
    parser.add_argument(
        "--states",
        action="store_true",
        help="random initial states h0, c0, as a Stream's chunks after the first (default: none, "
        "zeros, whose first recurrent product lstm_numba skips)",
    )
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="lstm_numba's model frozen (LSTM.freeze: weights packed once, not every call)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="every library on this many threads (lstm_numba.set_num_threads, "
        "torch.set_num_threads, ONNX Runtime's intra_op_num_threads; the GEMM rate too)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        lstm_numba.set_num_threads(args.threads)

    on_gpu = args.device == "cuda"
    shapes = args.shapes or [
        ",".join(map(str, s)) for s in (GPU_SHAPES if on_gpu else STANDARD_SHAPES)
    ]
    if on_gpu:
        print(f"device: {lstm_numba.available_devices()['cuda']}")
        sgemm = gpu_sgemm_gflops()
        print(f"float32 matmul (4096³) through torch/cuBLAS: {sgemm or float('nan'):.0f} GFLOP/s")
    else:
        sgemm = sgemm_gflops()
        print(f"machine: {machine_description()}")
        print(f"float32 GEMM (2048³) through @njit np.dot: {sgemm:.0f} GFLOP/s")
    directions = 2 if args.bidirectional else 1
    print(
        f"num_layers={args.num_layers}, directions={directions}, "
        f"lengths={'random in [T/2, T]' if args.lengths else 'all T'}, proj_size={args.proj_size}, "
        f"initial states={'random' if args.states else 'none (zeros)'}, "
        f"lstm_numba's model {'frozen' if args.freeze else 'not frozen'}, "
        f"threads={args.threads or 'each library its own'}"
    )
    rows, versions = [], {}
    for text in shapes:
        batch, steps, inputs, hidden = (int(v) for v in text.split(","))
        model = lstm_numba.LSTM(
            inputs,
            hidden,
            args.num_layers,
            bidirectional=args.bidirectional,
            proj_size=args.proj_size,
            seed=0,
        )
        if args.freeze:
            model = model.freeze()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, steps, inputs), dtype=np.float32)
        lengths = rng.integers((steps + 1) // 2, steps + 1, batch) if args.lengths else None
        hx = None
        if args.states:
            states = args.num_layers * directions
            hx = tuple(
                rng.standard_normal((states, batch, size), dtype=np.float32)
                for size in (model.output_size, hidden)
            )  # fmt: skip
        row = {"shape": (batch, steps, inputs, hidden)}
        if on_gpu:
            calls = gpu_library_calls(model, x, lengths, hx)
        else:
            calls = library_calls(model, x, lengths, hx, args.threads)
        for _ in range(args.rounds):
            for name, (version, call) in calls.items():
                if args.no_reference and name.startswith("numpy"):
                    continue
                versions[name] = version
                time.sleep(PEER_IDLE_SECONDS)  # the library before's idle threads asleep
                seconds = best_seconds(call, 1 if name.startswith("numpy") else args.repeats)
                row[name] = min(row.get(name, np.inf), seconds)
        flops = forward_flops(
            *row["shape"], args.num_layers, directions, args.proj_size, args.states
        )  # fmt: skip
        if lengths is not None:
            flops *= lengths.mean() / steps
        row["gflops"] = flops / row["lstm_numba"] / 1e9
        rows.append(row)
        print(format_row(row), flush=True)
    if not on_gpu:
        at_end = sgemm_gflops()
        print(f"float32 GEMM again, at the end: {at_end:.0f} GFLOP/s")
        sgemm = max(sgemm, at_end)
    print()
    print(markdown_table(rows, versions, sgemm))


def _peers(row):
    return [name for name in row if name not in ("shape", "gflops", "lstm_numba")]


def milliseconds(seconds):
    """Two decimals, or three significant digits below 1 ms (small models take µs)."""
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3g}"


def format_row(row):
    ours = row["lstm_numba"]
    others = ", ".join(f"{n} {milliseconds(row[n])} ms ({row[n] / ours:.2f}x)" for n in _peers(row))
    return f"{row['shape']}: lstm_numba {milliseconds(ours)} ms; {others}"


def markdown_table(rows, versions, sgemm):
    names = _peers(rows[0])
    header = ["(B, T, I, H)", "lstm_numba ms", "GFLOP/s", "of sgemm"]
    header += [f"{n} {versions[n]} ms (ratio)" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ours = row["lstm_numba"]
        cells = [str(row["shape"]), milliseconds(ours), f"{row['gflops']:.0f}"]
        cells.append(f"{row['gflops'] / sgemm:.0%}" if sgemm else "n/a")
        cells += [f"{milliseconds(row[n])} ({row[n] / ours:.2f}×)" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
