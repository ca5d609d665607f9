"""python -m lstm_numba: batched inference on a default model or your own, checked and timed.

Builds a seeded model (or loads one: ``--model``, a file of ``LSTM.save`` or an ONNX model), runs
a batch of random sequences (of random lengths with ``--lengths``), compares the result with the
float64 reference, and prints the first-call time (compile, or load from Numba's on-disk cache)
and the steady-state throughput in sequences per second; with ``--torch`` and ``--onnxruntime``,
those libraries' times on the same batch beside it; with ``--freeze``, the model frozen
(``LSTM.freeze``: its weights read-only and packed once, as a service would run it).
"""

import argparse
import os
import time

import numpy as np

import lstm_numba
from lstm_numba import reference
from lstm_numba._validation import import_optional


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


def plural(count, noun):
    """``"1 thread"``, ``"2 threads"``."""
    return f"{count} {noun}{'s' * (count != 1)}"


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
    parser.add_argument(
        "--lengths",
        action="store_true",
        help="sequences of random lengths in [T/2, T], as a padded batch holds them",
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], help="element type (float32)")
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="run this model instead: a file of LSTM.save (.npz, .safetensors) or ONNX (.onnx)",
    )
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="run the model frozen (LSTM.freeze: read-only weights, packed once, not every call)",
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
        help="also time torch.nn.LSTM on the same batch (needs torch; CPU)",
    )
    parser.add_argument(
        "--onnxruntime",
        action="store_true",
        help="also time ONNX Runtime on the same batch, on the --model .onnx file where it can "
        "(needs onnx, onnxruntime; CPU)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="at most this many threads for each library (lstm_numba.set_num_threads; "
        "torch.set_num_threads, ONNX Runtime's intra_op_num_threads); default: each one's own",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=20, help="timed calls (20; a library each)"
    )
    args = parser.parse_args(argv)
    for peer in PEERS:
        if getattr(args, peer) and args.device != "cpu":
            parser.error(f"--{peer}: with --device cpu only")
    sizes = [f"--{name.replace('_', '-')}" for name in MODEL_OPTIONS if getattr(args, name)]
    sizes += ["--bidirectional"] * args.bidirectional + ["--dtype"] * bool(args.dtype)
    if args.model is not None and sizes:
        parser.error(f"{', '.join(sizes)}: given by the file with --model; leave out")
    return parser, args


def main(argv=None):
    parser, args = parse_arguments(argv)
    if args.threads is not None:
        try:
            lstm_numba.set_num_threads(args.threads)
        except ValueError as error:
            parser.error(f"--threads: {error}")
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
    if args.freeze:
        model = model.freeze()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.steps, model.input_size)).astype(model.dtype)
    if not model.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    lengths = None
    if args.lengths:
        lengths = rng.integers((args.steps + 1) // 2, args.steps + 1, args.batch)
    layout = "(B, T, I)" if model.batch_first else "(T, B, I)"
    threads = f" ({plural(lstm_numba.get_num_threads(), 'thread')})" if args.device == "cpu" else ""
    frozen = ", frozen" if model.frozen else ""
    print(
        f"model: {model}{frozen}; x: {layout} = {x.shape} {x.dtype}; device: {args.device}{threads}"
    )
    if lengths is not None:
        print(f"lengths: {lengths.min()} to {lengths.max()} steps, {lengths.sum():,} in all")

    start = time.perf_counter()
    try:
        y, _ = model(x, lengths=lengths, device=args.device)
    except RuntimeError as error:  # no usable GPU for --device cuda
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    first_call = time.perf_counter() - start

    expected, _ = reference.model_forward(model, x, lengths=lengths)
    error = np.max(np.abs(y - expected)) / max(1.0, np.max(np.abs(expected)))
    tolerance = 1e-5 if model.dtype == np.float32 else 1e-12
    verdict = "OK" if error <= tolerance else "MISMATCH"
    print(f"check against the float64 reference: max error {error:.2e} (≤ {tolerance:g}) {verdict}")
    print(f"first call (compile or cache load): {first_call:.3f} s")

    calls = {"lstm_numba": lambda: model(x, lengths=lengths, device=args.device)}
    for peer, make_call in PEERS.items():
        if getattr(args, peer):
            try:
                name, forward = make_call(model, x, lengths, args)
                check = forward()  # y as lstm_numba's, and a first call out of the timing
            except (ImportError, ValueError) as error:
                parser.error(f"--{peer}: {error}")
            difference = np.max(np.abs(check - y)) / max(1.0, np.max(np.abs(y)))
            if difference > tolerance:
                parser.exit(1, f"{name}: y differs from lstm_numba's by {difference:.2e}\n")
            print(f"{name}: same y ({difference:.1e})")
            calls[name] = forward

    times = {name: [] for name in calls}
    rounds = PEER_ROUNDS if len(calls) > 1 else 1
    for _ in range(rounds):  # in turn: each library sees the machine's moments of the others
        for name, call in calls.items():
            if len(calls) > 1:
                time.sleep(PEER_IDLE_SECONDS)  # the library before's idle threads asleep
                call()  # untimed: caches warm
            for _ in range(-(-args.repeats // rounds)):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(spent)) for name, spent in times.items()}
    median = medians["lstm_numba"]
    print(
        f"forward: best {min(times['lstm_numba']) * 1e3:.2f} ms, median {median * 1e3:.2f} ms "
        f"over {len(times['lstm_numba'])} calls; {args.batch / median:,.0f} sequences/s, "
        f"{(args.batch * args.steps if lengths is None else lengths.sum()) / median:,.0f} steps/s"
    )
    for name in list(calls)[1:]:
        print(
            f"{name}: best {min(times[name]) * 1e3:.2f} ms, median {medians[name] * 1e3:.2f} ms; "
            f"lstm_numba {medians[name] / median:.2f}× its speed (medians, blocks of calls in turn)"
        )
    return 0 if verdict == "OK" else 1


def torch_forward(model, x, lengths, args):
    """``(name, call)``: ``lstm_numba.to_torch(model)`` on x (a ``PackedSequence`` of it with
    ``lengths``), returning y as a NumPy array; on at most ``args.threads`` threads
    (``torch.set_num_threads``), else torch's own count."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    module = lstm_numba.to_torch(model)
    x_torch = torch.from_numpy(x)
    batch_first, steps = model.batch_first, x.shape[1 if model.batch_first else 0]

    def forward():
        with torch.no_grad():
            if lengths is None:
                return module(x_torch)[0].numpy()
            packed = pack_padded_sequence(
                x_torch, torch.as_tensor(lengths), batch_first=batch_first, enforce_sorted=False
            )
            y, _ = pad_packed_sequence(module(packed)[0], batch_first, total_length=steps)
            return y.numpy()

    return f"torch {torch.__version__} ({plural(torch.get_num_threads(), 'thread')})", forward


def onnxruntime_forward(model, x, lengths, args):
    """``(name, call)``: ONNX Runtime on x (with ``lengths`` as sequence_lens), returning y as a
    NumPy array in x's layout, on at most ``args.threads`` threads (``intra_op_num_threads``),
    else its own count. The session runs the file of ``--model`` where it is an ONNX model whose
    first output is the LSTM's y (``onnx_file_forward``), else ``lstm_numba.to_onnx(model)``'s
    nodes."""
    if model.dtype != np.float32:
        raise ValueError(f"ONNX Runtime's LSTM runs float32 only, not {model.dtype}")
    ort = import_optional("onnxruntime")
    options = ort.SessionOptions()
    if args.threads is not None:
        options.intra_op_num_threads = args.threads
    name = f"onnxruntime {ort.__version__}"
    threads = [plural(args.threads, "thread")] if args.threads is not None else []
    if args.model is not None and str(args.model).lower().endswith(".onnx"):
        forward, why_not = onnx_file_forward(ort, options, args.model, model, x, lengths)
        if forward is not None:
            return f"{name} ({', '.join([os.path.basename(args.model), *threads])})", forward
        print(f"{name}: runs the LSTM nodes of {args.model}, re-exported: {why_not}")
    name += f" ({threads[0]})" if threads else ""
    # the nodes' own time-major graph, the states starting at zero as ours do
    onnx_model = lstm_numba.to_onnx(
        model, sequence_lens=lengths is not None, initial_states=False, batch_first=False
    )
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    time_major = np.ascontiguousarray(x.transpose(1, 0, 2)) if model.batch_first else x
    feeds = {"X": time_major}
    if lengths is not None:
        feeds["sequence_lens"] = lengths.astype(np.int32)

    def forward():
        return node_output_as_y(session.run(["Y"], feeds)[0], model.batch_first)

    return name, forward


def node_output_as_y(y, batch_first):
    """An LSTM node's Y [T, D, B, H] (layout 0) as the model's y, (B, T, D·H) or (T, B, D·H)."""
    steps, _, batch, _ = y.shape
    y = y.transpose(0, 2, 1, 3).reshape(steps, batch, -1)
    return y.transpose(1, 0, 2) if batch_first else y


def one_line(error):
    """An error's message on one line, at most 200 characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:199] + "…"


def onnx_file_forward(ort, options, path, model, x, lengths):
    """``(call, None)`` running the ONNX model in ``path`` on x, its first input (in the layout
    ``from_onnx`` read off the graph, the model's), any other float input zeros (initial states;
    symbolic dimensions the batch's) and any integer one ``lengths`` or x's length
    (sequence_lens), returning its first output as the model's y; or ``(None, why)`` where ONNX
    Runtime cannot run the file (an LSTM of layout 1), it takes no lengths where there are some,
    or its first output is neither y nor the node's Y."""
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's own errors (layout 1: "not supported")
        return None, one_line(error)
    steps, batch = x.shape[1::-1] if model.batch_first else x.shape[:2]
    first, *others = session.get_inputs()
    if lengths is not None and not any("int" in given.type for given in others):
        return None, "it takes no sequence lengths"
    feeds = {first.name: x}
    for given in others:
        if "int" in given.type:
            full = np.full(batch, steps)
            feeds[given.name] = (full if lengths is None else lengths).astype(np.int32)
        else:
            shape = [size if isinstance(size, int) else batch for size in given.shape]
            feeds[given.name] = np.zeros(shape, np.float32)
    output = session.get_outputs()[0].name
    y_shape = (*x.shape[:2], model.num_directions * model.output_size)
    node_shape = (steps, model.num_directions, batch, model.output_size)
    try:
        shape = session.run([output], feeds)[0].shape
    except Exception as error:  # inputs this guess does not fill
        return None, one_line(error)
    if shape == y_shape:
        return (lambda: session.run([output], feeds)[0]), None
    if shape == node_shape and not model.batch_first:
        return (lambda: node_output_as_y(session.run([output], feeds)[0], False)), None
    return None, f"its first output, {output!r}, has shape {shape}, not y's {y_shape}"


PEER_ROUNDS = 3
"""With peers, each library runs its calls in this many blocks, in turn: a block of calls, not a
call each in turn, since torch's and ONNX Runtime's threads spin a while after a call, slowing
the next library's (alternating single calls ran lstm_numba's (8, 50, 128, 256) two-layer
bidirectional forward at 24 ms against 13 ms in blocks)."""

PEER_IDLE_SECONDS = 0.2
"""Where peers run, the pause before each library's block of calls, so that the library before
has let its idle threads sleep: ONNX Runtime's spin ≈ 10–50 ms after its calls, on a core the
next library's threads need (lstm_numba's (1, 128, 512, 512), whose units split hands over
every step, took 10–12 ms right after ONNX Runtime's calls against 6.2–6.6 ms from 50 ms on;
torch's threads did not slow it; docs/performance.md, item 67). ``benchmarks/compare.py`` and
``plot_throughput.py`` pause as long."""

PEERS = {"torch": torch_forward, "onnxruntime": onnxruntime_forward}
"""The libraries ``--torch`` and ``--onnxruntime`` time beside lstm_numba."""


if __name__ == "__main__":
    raise SystemExit(main())
