"""python -m lstm_numba: batched inference on a default model or your own, checked and timed.

Builds a seeded model (or loads one: ``--model``, a file of ``LSTM.save`` or an ONNX model), runs
a batch of random sequences, compares the result with the float64 reference, and prints the
first-call time (compile, or load from Numba's on-disk cache) and the steady-state throughput in
sequences per second.
"""

import argparse
import time

import numpy as np

import lstm_numba
from lstm_numba import reference


def positive_int(text):
    """An argparse ``type``: ``text`` as an int ≥ 1, else a usage error naming the option."""
    error = argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    try:
        value = int(text)
    except ValueError:
        raise error from None
    if value < 1:
        raise error
    return value


MODEL_OPTIONS = {"input_size": 128, "hidden_size": 256, "num_layers": 1}
"""The default model's sizes; with ``--model`` they come from the file."""


def load_model(path):
    """The model in ``path``: an ONNX model (``.onnx``) or a file of ``LSTM.save``."""
    if str(path).lower().endswith(".onnx"):
        return lstm_numba.from_onnx(path)
    return lstm_numba.load(path)


def parse_arguments(argv):
    description = __doc__.split("\n")[0] if __doc__ else None  # None under python -OO
    parser = argparse.ArgumentParser(prog="python -m lstm_numba", description=description)
    parser.add_argument(
        "--batch", type=positive_int, default=64, help="sequences per batch, B (64)"
    )
    parser.add_argument("--steps", type=positive_int, default=100, help="time steps, T (100)")
    parser.add_argument("--input-size", type=positive_int, help="input features, I (128)")
    parser.add_argument("--hidden-size", type=positive_int, help="hidden units, H (256)")
    parser.add_argument("--num-layers", type=positive_int, help="stacked layers (1)")
    parser.add_argument("--bidirectional", action="store_true", help="both directions")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="element type (float32)")
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="run this model instead: a file of LSTM.save (.npz, .safetensors) or ONNX (.onnx)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where to run (cpu); cuda copies the batch over and back on each call",
    )
    parser.add_argument(
        "--torch",
        action="store_true",
        help="also time torch.nn.LSTM on the same batch (needs torch; CPU), the calls alternating",
    )
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed calls (20)")
    args = parser.parse_args(argv)
    if args.torch and args.device != "cpu":
        parser.error("--torch: with --device cpu only")
    sizes = [f"--{name.replace('_', '-')}" for name in MODEL_OPTIONS if getattr(args, name)]
    sizes += ["--bidirectional"] * args.bidirectional + ["--dtype"] * bool(args.dtype)
    if args.model is not None and sizes:
        parser.error(f"{', '.join(sizes)}: given by the file with --model; leave out")
    return parser, args


def main(argv=None):
    parser, args = parse_arguments(argv)
    if args.model is None:
        options = {name: getattr(args, name) or value for name, value in MODEL_OPTIONS.items()}
        model = lstm_numba.LSTM(
            **options, bidirectional=args.bidirectional, dtype=args.dtype or "float32", seed=0
        )
    else:
        try:
            model = load_model(args.model)
        except (OSError, ValueError, TypeError, ImportError) as error:
            parser.error(f"--model {args.model}: {error}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.steps, model.input_size)).astype(model.dtype)
    if not model.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    layout = "(B, T, I)" if model.batch_first else "(T, B, I)"
    print(f"model: {model}; x: {layout} = {x.shape} {x.dtype}; device: {args.device}")

    start = time.perf_counter()
    try:
        y, (h_n, c_n) = model(x, device=args.device)
    except RuntimeError as error:  # no usable GPU for --device cuda
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    first_call = time.perf_counter() - start

    expected, _ = reference.model_forward(model, x)
    error = np.max(np.abs(y - expected)) / max(1.0, np.max(np.abs(expected)))
    tolerance = 1e-5 if model.dtype == np.float32 else 1e-12
    verdict = "OK" if error <= tolerance else "MISMATCH"
    print(f"check against the float64 reference: max error {error:.2e} (≤ {tolerance:g}) {verdict}")
    print(f"first call (compile or cache load): {first_call:.3f} s")

    peer = None
    if args.torch:
        try:
            peer = torch_forward(model, x, y, tolerance)
        except (ImportError, ValueError) as error:
            parser.error(f"--torch: {error}")

    times, peer_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model(x, device=args.device)
        times.append(time.perf_counter() - start)
        if peer is not None:  # alternating: both see the machine's same moments
            start = time.perf_counter()
            peer()
            peer_times.append(time.perf_counter() - start)
    best, median = min(times), float(np.median(times))
    print(
        f"forward: best {best * 1e3:.2f} ms, median {median * 1e3:.2f} ms over {args.repeats} "
        f"calls; {args.batch / median:,.0f} sequences/s, "
        f"{args.batch * args.steps / median:,.0f} steps/s"
    )
    if peer is not None:
        peer_median = float(np.median(peer_times))
        print(
            f"torch.nn.LSTM: best {min(peer_times) * 1e3:.2f} ms, median {peer_median * 1e3:.2f} "
            f"ms; lstm_numba {peer_median / median:.2f}× its speed (medians, calls alternating)"
        )
    return 0 if verdict == "OK" else 1


def torch_forward(model, x, y, tolerance):
    """A call of ``lstm_numba.to_torch(model)`` on x, after checking that it gives y."""
    import torch

    module = lstm_numba.to_torch(model)
    x_torch = torch.from_numpy(x)

    def forward():
        with torch.no_grad():
            return module(x_torch)[0]

    error = np.max(np.abs(forward().numpy() - y)) / max(1.0, np.max(np.abs(y)))
    if error > tolerance:
        raise ValueError(f"torch's y differs from lstm_numba's by {error:.2e}")
    print(f"torch {torch.__version__} on {torch.get_num_threads()} threads: same y ({error:.1e})")
    return forward


if __name__ == "__main__":
    raise SystemExit(main())
