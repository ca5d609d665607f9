"""The fused CPU forward over batch × hidden × length, float32 and float64."""

import tracemalloc

import numpy as np

from .common import choose, model_and_input
from .compare import best_seconds, forward_flops, sgemm_gflops

INPUTS = 128


class Forward:
    params = (
        choose([1, 3, 32, 256], [1]),  # 1 and 3: their hidden units split over the threads
        choose([128, 512], [16]),
        choose([16, 128], [4]),
        ["float32", "float64"],
    )
    param_names = ["batch", "hidden", "steps", "dtype"]
    timeout = 300

    def setup_cache(self):
        """The machine's sgemm rate, measured once: the roof the forward is compared with."""
        return sgemm_gflops(choose(2048, 256))

    def setup(self, sgemm, batch, hidden, steps, dtype):
        self.shape = (batch, steps, INPUTS, hidden)
        self.model, self.x = model_and_input(*self.shape, dtype=dtype)
        self.model(self.x)  # compile or load from the cache

    def time_forward(self, *_):
        self.model(self.x)

    def peakmem_forward(self, *_):
        self.model(self.x)

    def track_sequences_per_second(self, *_):
        return self.shape[0] / best_seconds(lambda: self.model(self.x))

    track_sequences_per_second.unit = "sequences/s"

    def track_gflops(self, *_):
        return forward_flops(*self.shape) / best_seconds(lambda: self.model(self.x)) / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_fraction_of_sgemm(self, sgemm, *_):
        return self.track_gflops() / sgemm

    track_fraction_of_sgemm.unit = "fraction of the float32 GEMM rate"


class ForwardSmall:
    """Small models, where the plan's thresholds decide: the register tile's panels from 32
    row-steps at H ≤ 64, rows split over the threads from 10⁶ multiply-adds, two directions
    side by side from 32 steps (docs/performance.md, items 33–35)."""

    params = (
        choose(["2,32,64,64", "8,64,32,32", "1,100,16,16", "32,8,32,32"], ["2,8,16,16"]),
        [False, True],
    )
    param_names = ["shape", "bidirectional"]

    def setup(self, shape, bidirectional):
        shape = tuple(int(v) for v in shape.split(","))
        self.model, self.x = model_and_input(*shape, bidirectional=bidirectional)
        self.model(self.x)  # compile or load from the cache

    def time_forward(self, *_):
        self.model(self.x)


class ForwardMemory:
    """Allocation peak of a forward on long sequences, relative to what it must hold anyway: 32
    rows split over the threads, or 5 whose hidden units split (two directions after the first
    layer: in turn, in groups of rows, or side by side in halves of time; both in place from
    16 MiB of half y; with ``low_memory``, in place at any size, in smaller groups of rows or,
    for the 5 rows, part of the forward direction computed twice)."""

    params = (
        choose([1000, 4000], [50]),
        [1, 3],
        ["all T", "random in [T/2, T]"],
        [False, True],
        choose([5, 32], [2]),
        [False, True],
    )
    param_names = ["steps", "num_layers", "lengths", "bidirectional", "batch", "low_memory"]
    timeout = 300

    def setup(self, steps, num_layers, lengths, bidirectional, batch, low_memory):
        if low_memory and (num_layers == 1 or not bidirectional):
            raise NotImplementedError("low_memory changes stacks of two directions only")
        self.model, self.x = model_and_input(
            batch, steps, 256, 256, num_layers=num_layers, bidirectional=bidirectional
        )
        rng = np.random.default_rng(1)
        self.lengths = None if lengths == "all T" else rng.integers(steps // 2, steps + 1, batch)
        self.low_memory = low_memory
        self.model(self.x, lengths=self.lengths, low_memory=low_memory)  # compiled or loaded

    def track_peak_over_io_and_weights(self, *_):
        """(x + weights + the forward's allocation peak) / (x + y + weights): 1.0 means no
        workspace beyond the output."""
        weights = sum(w.nbytes for w in self.model.state_dict().values())
        tracemalloc.start()
        y, _ = self.model(self.x, lengths=self.lengths, low_memory=self.low_memory)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return (self.x.nbytes + weights + peak) / (self.x.nbytes + y.nbytes + weights)

    track_peak_over_io_and_weights.unit = "ratio"


class ForwardLowMemory:
    """What ``low_memory=True`` costs a stack of two directions (two layers; its peak:
    ``ForwardMemory``): few rows compute part of the forward direction twice, more run in
    smaller groups."""

    params = (choose([1, 4, 8, 32], [2]), [False, True])
    param_names = ["batch", "low_memory"]
    timeout = 300

    def setup(self, batch, low_memory):
        shape = (batch, choose(2000, 40), INPUTS, choose(256, 16))
        self.model, self.x = model_and_input(*shape, num_layers=2, bidirectional=True)
        self.low_memory = low_memory
        self.model(self.x, low_memory=low_memory)  # compiled or loaded

    def time_forward(self, *_):
        self.model(self.x, low_memory=self.low_memory)


class ForwardLayersDirectionsLengths:
    """Stacked layers, both directions and variable lengths on one shape: each option's cost."""

    params = ([1, 2], [False, True], ["all T", "random in [T/2, T]"], choose([1, 32], [2]))
    param_names = ["num_layers", "bidirectional", "lengths", "batch"]
    timeout = 300

    def setup(self, num_layers, bidirectional, lengths, batch):
        shape = (batch, choose(128, 4), INPUTS, choose(256, 16))
        self.model, self.x = model_and_input(
            *shape, num_layers=num_layers, bidirectional=bidirectional
        )
        steps = shape[1]
        rng = np.random.default_rng(1)
        self.lengths = None if lengths == "all T" else rng.integers(steps // 2, steps + 1, batch)
        self.model(self.x, lengths=self.lengths)  # compile or load from the cache

    def time_forward(self, *_):
        self.model(self.x, lengths=self.lengths)


class ForwardProjected:
    """LSTMP (``proj_size`` P): the forward with h projected to P, beside the plain one (P = 0)."""

    params = (choose([0, 128], [0, 8]), choose([1, 32], [2]))
    param_names = ["proj_size", "batch"]
    timeout = 300

    def setup(self, proj_size, batch):
        shape = (batch, choose(128, 4), INPUTS, choose(256, 16))
        self.model, self.x = model_and_input(*shape, proj_size=proj_size)
        self.model(self.x)  # compile or load from the cache

    def time_forward(self, *_):
        self.model(self.x)


class ForwardBatchSizesInTurn:
    """One model called at two batch sizes in turn, as a server may call it: B = 1 runs on the
    calling thread, B = 8 on the parallel driver's threads (docs/performance.md, item 31: each
    call after the other waited ≈ 4 ms for the other thread pool's spinning workers)."""

    params = choose([64, 256], [16])
    param_names = ["hidden"]

    def setup(self, hidden):
        self.model, self.x = model_and_input(8, choose(100, 10), hidden, hidden)
        self.row = self.x[:1].copy()
        self.time_one_row_then_eight()  # compile or load from the cache

    def time_one_row_then_eight(self, *_):
        self.model(self.row)
        self.model(self.x)
