"""Peak memory and time of bidirectional stacks, by default and with ``low_memory=True``.

    python benchmarks/memory.py                       # the shapes of docs/performance.md
    python benchmarks/memory.py --shapes 1,20000,256,256 --num-layers 3 --lengths --time-major

For each B,T,I,H shape, a float32 ``LSTM(I, H, num_layers, bidirectional=True)`` on normal x
(with random lengths in [T/2, T] under ``--lengths``): after a first call of each, the ratio
(x + weights + the forward's allocation peak, tracemalloc's) / (x + y + weights), the issue's
bound being 1.2; then the two calls in turn ``--repeats`` times, in one process (the machine's
speed drifts), printing the best two times of each and the ratio of the bests.
On two threads a small shape's ratio moves from run to run: the two directions' workspaces,
there as large as y, count in the peak only where their calls overlap in time.
"""

import argparse
import time
import tracemalloc

import numpy as np

import lstm_numba

SHAPES = [
    "1,20000,256,256",
    "1,20000,32,256",
    "1,4000,256,256",
    "4,8000,256,256",
    "8,4000,256,256",
    "11,3000,256,256",
    "32,1000,256,256",
]


def peak_ratio(model, x, lengths, low_memory):
    """(x + weights + the allocation peak of one forward) / (x + y + weights)."""
    weights = sum(array.nbytes for array in model.state_dict().values())
    tracemalloc.start()
    y, _ = model(x, lengths=lengths, low_memory=low_memory)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (x.nbytes + weights + peak) / (x.nbytes + y.nbytes + weights)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="*", default=SHAPES, help="B,T,I,H shapes")
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--lengths", action="store_true", help="random lengths in [T/2, T]")
    parser.add_argument("--time-major", action="store_true", help="x (T, B, I)")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| (B, T, I, H) | ratio default → low_memory | ms | time × |")
    print("|---|---|---|---|")
    for shape in args.shapes:
        batch, steps, inputs, hidden = map(int, shape.split(","))
        model = lstm_numba.LSTM(
            inputs, hidden, args.num_layers, bidirectional=True, batch_first=not args.time_major
        )
        layout = (steps, batch) if args.time_major else (batch, steps)
        x = rng.standard_normal((*layout, inputs)).astype(np.float32)
        lengths = rng.integers(steps // 2, steps + 1, batch) if args.lengths else None
        ratios, times = {}, {False: [], True: []}
        for low_memory in times:
            model(x, lengths=lengths, low_memory=low_memory)  # compiled or loaded
            ratios[low_memory] = peak_ratio(model, x, lengths, low_memory)
        for _ in range(args.repeats):
            for low_memory, taken in times.items():
                start = time.perf_counter()
                model(x, lengths=lengths, low_memory=low_memory)
                taken.append(time.perf_counter() - start)
        best = {low_memory: sorted(taken) for low_memory, taken in times.items()}
        spans = [f"{1e3 * best[k][0]:.0f}–{1e3 * best[k][:2][-1]:.0f}" for k in times]
        print(
            f"| {(batch, steps, inputs, hidden)} | {ratios[False]:.2f} → {ratios[True]:.2f} | "
            f"{spans[0]} → {spans[1]} | {best[True][0] / best[False][0]:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
