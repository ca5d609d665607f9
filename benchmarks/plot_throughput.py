"""Plot throughput (sequences/s) against batch size for lstm_numba and torch, float32, CPU.

    python benchmarks/plot_throughput.py                 # writes docs/throughput_vs_batch.png

Needs matplotlib (the ``bench`` extra); torch is plotted when installed. Each point is the best
of 5 calls after a warm-up, both libraries timed in this process at each batch size, taking
``--rounds`` turns (3), each after a pause in which the other lets its idle threads sleep
(``PEER_IDLE_SECONDS``): a library timed right after another can run slower while the other's
threads still spin (docs/performance.md, items 20 and 67).
"""

import argparse
import pathlib
import time

import numpy as np

import lstm_numba

OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "throughput_vs_batch.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=256, help="input and hidden size (256)")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--rounds", type=int, default=3, help="turns each library takes (3)")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    args = parser.parse_args(argv)
    # imported here: asv imports every module of benchmarks/ and needs neither
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from compare import PEER_IDLE_SECONDS, best_seconds, library_calls, machine_description
    from matplotlib.ticker import StrMethodFormatter

    batches = [int(b) for b in args.batches.split(",")]
    model = lstm_numba.LSTM(args.size, args.size, seed=0)
    throughput = {}
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, args.steps, args.size), np.float32)
        calls = {
            f"{name} {version}": call
            for name, (version, call) in library_calls(model, x).items()
            if name in ("lstm_numba", "torch")
        }
        rates = dict.fromkeys(calls, 0.0)
        for _ in range(args.rounds):
            for label, call in calls.items():
                time.sleep(PEER_IDLE_SECONDS)
                rates[label] = max(rates[label], batch / best_seconds(call))
        for label, rate in rates.items():
            throughput.setdefault(label, []).append(rate)
            print(f"B={batch:4d} {label:22s} {rate:12,.0f} sequences/s", flush=True)

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, rates in throughput.items():
        axes.plot(batches, rates, marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:.0f}"))
    axes.set_ylim(bottom=0)  # linear from zero: the rates span a few times, not decades
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_xlabel("batch size B")
    axes.set_ylabel("sequences per second")
    axes.set_title(
        f"LSTM forward, float32, T={args.steps}, I=H={args.size}\n{machine_description()}",
        fontsize=9,
    )
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    plt.close(figure)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
