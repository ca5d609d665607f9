"""``python -m lstm_numba``: batched inference on a default model, checked and timed.

Builds a seeded model, runs a batch of random sequences, compares the result with the float64
reference, and prints the first-call time (compile, or load from Numba's on-disk cache) and the
steady-state throughput in sequences per second.
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


def main(argv=None):
    description = __doc__.split("\n")[0] if __doc__ else None  # None under python -OO
    parser = argparse.ArgumentParser(prog="python -m lstm_numba", description=description)
    parser.add_argument(
        "--batch", type=positive_int, default=64, help="sequences per batch, B (64)"
    )
    parser.add_argument("--steps", type=positive_int, default=100, help="time steps, T (100)")
    parser.add_argument(
        "--input-size", type=positive_int, default=128, help="input features, I (128)"
    )
    parser.add_argument(
        "--hidden-size", type=positive_int, default=256, help="hidden units, H (256)"
    )
    parser.add_argument("--num-layers", type=positive_int, default=1, help="stacked layers (1)")
    parser.add_argument("--bidirectional", action="store_true", help="both directions")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed calls (20)")
    args = parser.parse_args(argv)

    model = lstm_numba.LSTM(
        args.input_size,
        args.hidden_size,
        args.num_layers,
        bidirectional=args.bidirectional,
        dtype=args.dtype,
        seed=0,
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.steps, args.input_size)).astype(args.dtype)
    print(f"model: {model}; x: (B, T, I) = {x.shape} {x.dtype}")

    start = time.perf_counter()
    y, (h_n, c_n) = model(x)
    first_call = time.perf_counter() - start

    expected, _ = reference.lstm_forward(x, model.state_dict())
    error = np.max(np.abs(y - expected)) / max(1.0, np.max(np.abs(expected)))
    tolerance = 1e-5 if args.dtype == "float32" else 1e-12
    verdict = "OK" if error <= tolerance else "MISMATCH"
    print(f"check against the float64 reference: max error {error:.2e} (≤ {tolerance:g}) {verdict}")

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    best, median = min(times), float(np.median(times))
    print(f"first call (compile or cache load): {first_call:.3f} s")
    print(
        f"forward: best {best * 1e3:.2f} ms, median {median * 1e3:.2f} ms over {args.repeats} "
        f"calls; {args.batch / median:,.0f} sequences/s, "
        f"{args.batch * args.steps / median:,.0f} steps/s"
    )
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    raise SystemExit(main())
