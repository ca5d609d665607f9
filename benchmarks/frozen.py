"""A frozen model (``LSTM.freeze``) against the same model not frozen, in one process.

    python benchmarks/frozen.py --states              # the shapes of docs/performance.md, item 68
    python benchmarks/frozen.py --shapes 1,128,128,128 32,128,256,256

For each B,T,I,H shape, a float32 ``LSTM(I, H)`` and its frozen copy on the same normal x (from
random initial states with ``--states``, as a ``Stream``'s chunks after the first; else from
none), in turn ``--rounds`` times, each turn the best of as many calls as make ≈ 2·10⁵
multiply-adds of hidden units after one untimed (``compare.best_seconds``; the first compiles
and packs); printing the medians of the turns' bests and their ratio (> 1: the frozen model is
faster).
"""

import argparse
import functools

import numpy as np

import lstm_numba

SHAPES = [
    "8,1,512,512",
    "2,1,512,512",
    "4,1,1024,1024",
    "16,1,256,256",
    "64,1,256,256",
    "6,1,256,256",
    "8,8,128,128",
    "2,16,512,512",
    "3,32,768,768",
    "5,16,1024,1024",
]


def main(argv=None):
    from compare import best_seconds  # as a script (asv imports this module as benchmarks.frozen)

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="*", default=SHAPES, help="B,T,I,H shapes")
    parser.add_argument("--states", action="store_true", help="random initial states h0, c0")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the two in turn (7)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| (B, T, I, H) | not frozen ms | frozen ms | frozen / not |")
    print("|---|---|---|---|")
    for text in args.shapes:
        batch, steps, inputs, hidden = (int(v) for v in text.split(","))
        model = lstm_numba.LSTM(inputs, hidden, seed=0)
        frozen = model.freeze()
        x = rng.standard_normal((batch, steps, inputs), dtype=np.float32)
        hx = None
        if args.states:
            hx = tuple(rng.standard_normal((1, batch, hidden), dtype=np.float32) for _ in "hc")
        calls = max(3, int(2e5 / (batch * steps * hidden)))
        forwards = [functools.partial(each, x, hx) for each in (model, frozen)]
        best = [[], []]
        for _ in range(args.rounds):
            for times, forward in zip(best, forwards, strict=True):
                times.append(best_seconds(forward, calls))
        plain, packed = (float(np.median(times)) * 1e3 for times in best)
        shape = (batch, steps, inputs, hidden)
        print(f"| {shape} | {plain:.3g} | {packed:.3g} | {plain / packed:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
