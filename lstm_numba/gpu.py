"""GPU kernels (``@cuda.jit``, needs ``numba-cuda``): the LSTM forward on CUDA device arrays.

A layer runs as two kernels, whatever T is:

1. ``input_projection``: x·W_ihᵀ + b for every time step and both directions in one register-tiled
   shared-memory GEMM, (N, I) · (D·4H, I)ᵀ → (N, D·4H) with N = B·T rows in x's own order.
2. The sequence: one cooperative launch per direction runs the whole sequence (the "persistent
   RNN" design), a grid-wide barrier between the steps. Blocks own hidden units with all four of
   their gates, so the cell update (``finish_unit``) is fused and the pre-activations never go to
   global memory.

   - ``lstm_sequence`` (unless ``takes_tiled``, for few (row, unit) pairs): each block owns a slice
     of hidden units (and, when blocks are left over, a slice of the batch rows); its slice of
     W_hh is loaded into shared memory once when it fits (``weights_in_shared``), read from global
     memory (L2) otherwise. Groups of threads (``lanes``) share each (unit, row)'s dot products, so
     that even batch 1 keeps the threads busy.
   - ``lstm_sequence_tiled`` (many pairs): a step's recurrent product h·W_hhᵀ is a GEMM, done
     in register tiles of rows × units (``gemm_tile``, the projection's own), W_hh read from L2.

The gate math is ``lstm_numba.equations``, the same functions the CPU kernels inline, compiled by
Numba as CUDA device functions.

Under Numba's CUDA simulator a grid barrier only synchronises one block (blocks run one after
another), so the sequence kernels run as a single block there (``plan_sequence``, ``plan_tiled``);
the multi-block unit slicing is exercised with one-step sequences, where no barrier is needed.
"""

import math
import warnings

import numpy as np
from numba import config, cuda

from lstm_numba._config import CACHE
from lstm_numba.equations import lstm_gates, lstm_gates_onnx

GEMM_THREADS = 16
"""GEMM blocks (``input_projection``; ``lstm_sequence_tiled``'s recurrent product) are
GEMM_THREADS × GEMM_THREADS threads; the inner dimension goes in slices of GEMM_THREADS."""
GEMM_ROW_WORK = 4
"""Rows of the output each thread computes."""
GEMM_COLUMN_WORK = 4
"""Columns of the output each thread computes: a multiple of 4, so that in the recurrent product a
thread holds the four gates of each of its hidden units."""
GEMM_ROWS = GEMM_THREADS * GEMM_ROW_WORK
"""A block computes a GEMM_ROWS × GEMM_COLUMNS tile of the output (constants: they size shared
arrays)."""
GEMM_COLUMNS = GEMM_THREADS * GEMM_COLUMN_WORK
GEMM_ROWS_PADDED, GEMM_COLUMNS_PADDED = GEMM_ROWS + 1, GEMM_COLUMNS + 1
"""Row lengths of the tiles staged in shared memory: one more than the tile's, so that the threads
staging consecutive k write to different banks."""

SEQUENCE_THREADS = 256
"""Threads per ``lstm_sequence`` block."""
SEQUENCE_LANES = 32
"""Most threads that share one (unit, row)'s four dot products, each summing every lanes-th term
(a warp: its loads of h and W_hh are coalesced)."""
SEQUENCE_MIN_LANES = 4
"""Fewest (at large batch: more groups for the rows, fewer partial sums to add up). On an H200,
4 ran 4-17 % faster than 8 at every shape of a sweep (performance.md, GPU)."""
TILED_MIN_PAIRS = 64 * 1024
"""Layers of B·H (row, unit) pairs from this many run ``lstm_sequence_tiled`` (a register-tiled
GEMM a step); fewer ``lstm_sequence`` (dot products shared by lanes of threads), whose threads stay
busy at batch 1. On an H200 the tiled kernel won from B = 256 at H = 256, 128 at 512, 64 at 1024,
and lost at the next batch measured below each (performance.md, GPU)."""
SHARED_BYTES = 48 * 1024
"""Dynamic shared memory a block may use without opting in, on every CUDA GPU since Kepler."""


@cuda.jit(device=True)
def fetch_slice(a, row0, w, column0, group, stride, limit, k0, a_next, w_next):
    """This thread's share of the k0… slice of a GEMM tile (``gemm_tile``) into registers: column
    k0 + tx of a's tile rows ty + i·GEMM_THREADS and of w's tile columns ty + j·GEMM_THREADS
    (a warp reads two runs of 16 consecutive k); zeros outside a and w."""
    rows, inner = a.shape
    thread = cuda.threadIdx.x + cuda.threadIdx.y * cuda.blockDim.x
    tx, ty = thread % GEMM_THREADS, thread // GEMM_THREADS
    k = k0 + tx
    for i in range(GEMM_ROW_WORK):
        row = row0 + ty + i * GEMM_THREADS
        a_next[i] = a[row, k] if row < rows and k < inner else 0
    for j in range(GEMM_COLUMN_WORK):
        n = ty + j * GEMM_THREADS
        present = k < inner and column0 + n % group < limit
        w_next[j] = w[column0 + (n // group) * stride + n % group, k] if present else 0


@cuda.jit(device=True)
def gemm_tile(a, row0, w, column0, group, stride, limit, acc):
    """acc[i, j] = Σ_k a[row0 + ty + i·GEMM_THREADS, k] · w[w_row(tx + j·GEMM_THREADS), k] for this
    thread (tx, ty) of a GEMM_THREADS × GEMM_THREADS block: its part of a GEMM_ROWS × GEMM_COLUMNS
    tile of a (M, K) · wᵀ, w (N, K), a thread's rows and columns GEMM_THREADS apart (shared-memory
    reads without bank conflicts, coalesced stores). Tile column n reads w's row
    ``column0 + (n // group)·stride + n % group``, present when ``column0 + n % group < limit``:
    group = GEMM_COLUMNS, stride = 0 for consecutive rows (``input_projection``); group = units,
    stride = H for the four gates' rows of units column0… (``tiled_step``). Rows of a past M and
    absent rows of w count as zeros. acc: (GEMM_ROW_WORK, GEMM_COLUMN_WORK), overwritten.

    K goes in slices of GEMM_THREADS staged in shared memory; the next slice's loads
    (``fetch_slice``) are in flight while the block multiplies the current one, so that even one
    block an SM (the sequence kernels) hides the latency of L2.
    """
    a_tile = cuda.shared.array((GEMM_THREADS, GEMM_ROWS_PADDED), dtype=a.dtype)
    w_tile = cuda.shared.array((GEMM_THREADS, GEMM_COLUMNS_PADDED), dtype=a.dtype)
    a_next = cuda.local.array(GEMM_ROW_WORK, dtype=a.dtype)
    w_next = cuda.local.array(GEMM_COLUMN_WORK, dtype=a.dtype)
    a_values = cuda.local.array(GEMM_ROW_WORK, dtype=a.dtype)
    w_values = cuda.local.array(GEMM_COLUMN_WORK, dtype=a.dtype)
    inner = a.shape[1]
    thread = cuda.threadIdx.x + cuda.threadIdx.y * cuda.blockDim.x
    tx, ty = thread % GEMM_THREADS, thread // GEMM_THREADS
    for i in range(GEMM_ROW_WORK):
        for j in range(GEMM_COLUMN_WORK):
            acc[i, j] = 0
    fetch_slice(a, row0, w, column0, group, stride, limit, 0, a_next, w_next)
    for k0 in range(0, inner, GEMM_THREADS):
        for i in range(GEMM_ROW_WORK):
            a_tile[tx, ty + i * GEMM_THREADS] = a_next[i]
        for j in range(GEMM_COLUMN_WORK):
            w_tile[tx, ty + j * GEMM_THREADS] = w_next[j]
        cuda.syncthreads()
        k_next = k0 + GEMM_THREADS
        if k_next < inner:
            fetch_slice(a, row0, w, column0, group, stride, limit, k_next, a_next, w_next)
        for k in range(GEMM_THREADS):
            for i in range(GEMM_ROW_WORK):
                a_values[i] = a_tile[k, ty + i * GEMM_THREADS]
            for j in range(GEMM_COLUMN_WORK):
                w_values[j] = w_tile[k, tx + j * GEMM_THREADS]
            for i in range(GEMM_ROW_WORK):
                for j in range(GEMM_COLUMN_WORK):
                    acc[i, j] += a_values[i] * w_values[j]
        cuda.syncthreads()


@cuda.jit(cache=CACHE)
def input_projection(a, w, bias, out):
    """out (M, N) = a (M, K) · wᵀ + bias, w (N, K), bias (N,); one dtype.

    Launch: blocks (⌈N/GEMM_COLUMNS⌉, ⌈M/GEMM_ROWS⌉) of (GEMM_THREADS, GEMM_THREADS) threads,
    each a tile (``gemm_tile``).
    """
    acc = cuda.local.array((GEMM_ROW_WORK, GEMM_COLUMN_WORK), dtype=a.dtype)
    rows, columns = out.shape
    row0, column0 = cuda.blockIdx.y * GEMM_ROWS, cuda.blockIdx.x * GEMM_COLUMNS
    gemm_tile(a, row0, w, column0, GEMM_COLUMNS, 0, columns, acc)
    for i in range(GEMM_ROW_WORK):
        row = row0 + cuda.threadIdx.y + i * GEMM_THREADS
        for j in range(GEMM_COLUMN_WORK):
            column = column0 + cuda.threadIdx.x + j * GEMM_THREADS
            if row < rows and column < columns:
                out[row, column] = acc[i, j] + bias[column]


@cuda.jit(device=True)
def finish_unit(
    step, b, j, r_i, r_f, r_g, r_o, projected, onnx, kinds, parameters, peepholes, bound,
    input_forget, h_prev, h_next, h_unprojected, c, y, lengths, direction, reverse, batch_first,
    projecting, trace,
):  # fmt: skip
    """Hidden unit j of batch row b at ``step``, given its recurrent sums r_* = W_hh[gate·H + j] ·
    h_prev[b]: adds the projected input, applies the gates (``lstm_numba.equations``) and writes C,
    and h (into ``h_next`` and y) or, with a projection, o ⊙ h(C) into ``h_unprojected``
    (``project_step`` finishes h). A row whose sequence has ended carries its state over.
    trace: (5, B, T, H) records f, i, C̃, o, C, or (0, 0, 0, 0) for none.
    """
    batch, hidden = c.shape
    steps = projected.shape[0] // batch
    length = lengths[b]
    if step >= length:
        if not projecting:
            h_next[b, j] = h_prev[b, j]
        return
    t = length - 1 - step if reverse else step
    row = b * steps + t if batch_first else t * batch + b
    column = direction * 4 * hidden + j
    z_i = projected[row, column] + r_i
    z_f = projected[row, column + hidden] + r_f
    z_g = projected[row, column + 2 * hidden] + r_g
    z_o = projected[row, column + 3 * hidden] + r_o
    if onnx:
        f, i, g, o, c_value, h_value = lstm_gates_onnx(
            z_i, z_f, z_g, z_o, c[b, j], peepholes[0, j], peepholes[1, j], peepholes[2, j], bound,
            input_forget, kinds[0], parameters[0, 0], parameters[0, 1], kinds[1],
            parameters[1, 0], parameters[1, 1], kinds[2], parameters[2, 0], parameters[2, 1],
        )  # fmt: skip
    else:
        f, i, g, o, c_value, h_value = lstm_gates(z_i, z_f, z_g, z_o, c[b, j])
    if trace.shape[0] > 0:
        trace[0, b, t, j], trace[1, b, t, j], trace[2, b, t, j] = f, i, g
        trace[3, b, t, j], trace[4, b, t, j] = o, c_value
    c[b, j] = c_value
    if projecting:
        h_unprojected[b, j] = h_value
    else:
        h_next[b, j] = h_value
        y[row, direction * h_next.shape[1] + j] = h_value


@cuda.jit(device=True)
def sequence_step(
    step, projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
    h, h_unprojected, c, y, lengths, direction, reverse, batch_first, shared, weights_in_shared,
    unit_blocks, lanes, trace,
):  # fmt: skip
    """One time step of ``lstm_sequence`` for the hidden units and batch rows this block owns.

    The block's threads form groups of ``lanes``. A group takes one (unit j, row b) pair at a
    time, pairs row-fastest (the groups of a warp read the same weights); each of its threads sums
    every lanes-th term of W_hh[gate·H + j] · h_prev[b] for the four gates, and the group's first
    thread adds up the partial sums (shared[:4·threads]) and finishes the unit (``finish_unit``).
    """
    batch, hidden = c.shape
    out = h.shape[2]
    threads = cuda.blockDim.x
    thread = cuda.threadIdx.x
    units = (hidden + unit_blocks - 1) // unit_blocks
    first_unit = (cuda.blockIdx.x % unit_blocks) * units
    owned = max(0, min(units, hidden - first_unit))
    slices = cuda.gridDim.x // unit_blocks
    rows = (batch + slices - 1) // slices
    first_row = (cuda.blockIdx.x // unit_blocks) * rows
    owned_rows = max(0, min(rows, batch - first_row))
    group, lane = thread // lanes, thread % lanes
    groups = threads // lanes
    weights = 4 * threads  # this block's W_hh rows start there in ``shared``
    h_prev, h_next = h[step % 2], h[1 - step % 2]
    zero = type(c[0, 0])(0)
    pairs = owned * owned_rows
    for start in range(0, pairs, groups):  # the same rounds in every thread: they synchronise
        pair = start + group
        local, b = pair // owned_rows, first_row + pair % owned_rows
        j = first_unit + local
        sum_i, sum_f, sum_g, sum_o = zero, zero, zero, zero
        if pair < pairs and step < lengths[b]:
            for k in range(lane, out, lanes):
                h_k = h_prev[b, k]
                if weights_in_shared:
                    row = weights + local * out + k
                    sum_i += shared[row] * h_k
                    sum_f += shared[row + owned * out] * h_k
                    sum_g += shared[row + 2 * owned * out] * h_k
                    sum_o += shared[row + 3 * owned * out] * h_k
                else:
                    sum_i += w_hh[j, k] * h_k
                    sum_f += w_hh[hidden + j, k] * h_k
                    sum_g += w_hh[2 * hidden + j, k] * h_k
                    sum_o += w_hh[3 * hidden + j, k] * h_k
        shared[thread] = sum_i
        shared[threads + thread] = sum_f
        shared[2 * threads + thread] = sum_g
        shared[3 * threads + thread] = sum_o
        cuda.syncthreads()
        if lane == 0 and pair < pairs:
            sum_i = sum_f = sum_g = sum_o = zero
            for other in range(thread, thread + lanes):
                sum_i += shared[other]
                sum_f += shared[threads + other]
                sum_g += shared[2 * threads + other]
                sum_o += shared[3 * threads + other]
            finish_unit(
                step, b, j, sum_i, sum_f, sum_g, sum_o, projected, onnx, kinds, parameters,
                peepholes, bound, input_forget, h_prev, h_next, h_unprojected, c, y, lengths,
                direction, reverse, batch_first, w_hr.shape[0] > 0, trace,
            )  # fmt: skip
        cuda.syncthreads()


@cuda.jit(device=True)
def tiled_step(
    step, projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
    h, h_unprojected, c, y, lengths, direction, reverse, batch_first, trace,
):  # fmt: skip
    """One time step of ``lstm_sequence_tiled``: the recurrent product h_prev · W_hhᵀ in tiles of
    GEMM_ROWS batch rows × GEMM_COLUMNS / 4 hidden units (their four gates' rows of W_hh), the
    block taking tiles gridDim apart; ``gemm_tile`` leaves each thread the four gates of its units
    for its rows, which it finishes (``finish_unit``)."""
    batch, hidden = c.shape
    units = GEMM_COLUMNS // 4
    per_gate = GEMM_COLUMN_WORK // 4  # a thread's units, each with its four gates
    unit_tiles = (hidden + units - 1) // units
    tiles = unit_tiles * ((batch + GEMM_ROWS - 1) // GEMM_ROWS)
    acc = cuda.local.array((GEMM_ROW_WORK, GEMM_COLUMN_WORK), dtype=c.dtype)
    tx, ty = cuda.threadIdx.x % GEMM_THREADS, cuda.threadIdx.x // GEMM_THREADS
    h_prev, h_next = h[step % 2], h[1 - step % 2]
    projecting = w_hr.shape[0] > 0
    for tile in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
        row0, unit0 = (tile // unit_tiles) * GEMM_ROWS, (tile % unit_tiles) * units
        gemm_tile(h_prev, row0, w_hh, unit0, units, hidden, hidden, acc)
        for i in range(GEMM_ROW_WORK):
            b = row0 + ty + i * GEMM_THREADS
            for s in range(per_gate):
                j = unit0 + tx + s * GEMM_THREADS
                if b < batch and j < hidden:
                    finish_unit(
                        step, b, j, acc[i, s], acc[i, s + per_gate], acc[i, s + 2 * per_gate],
                        acc[i, s + 3 * per_gate], projected, onnx, kinds, parameters, peepholes,
                        bound, input_forget, h_prev, h_next, h_unprojected, c, y, lengths,
                        direction, reverse, batch_first, projecting, trace,
                    )  # fmt: skip


@cuda.jit(device=True)
def project_step(step, w_hr, h, h_unprojected, y, lengths, direction, reverse, batch_first):
    """h = W_hr · h_unprojected for one step (LSTM with projection), spread over the grid."""
    batch, out = h.shape[1], h.shape[2]
    steps = y.shape[0] // batch
    h_prev, h_next = h[step % 2], h[1 - step % 2]
    first = cuda.grid(1)
    for pair in range(first, out * batch, cuda.gridsize(1)):
        p, b = pair % out, pair // out
        length = lengths[b]
        if step >= length:
            h_next[b, p] = h_prev[b, p]
            continue
        acc = h_unprojected[b, 0] * w_hr[p, 0]
        for k in range(1, w_hr.shape[1]):
            acc += h_unprojected[b, k] * w_hr[p, k]
        h_next[b, p] = acc
        t = length - 1 - step if reverse else step
        row = b * steps + t if batch_first else t * batch + b
        y[row, direction * out + p] = acc


@cuda.jit(device=True)
def zero_past_lengths(y, lengths, direction, out, batch_first):
    """Zeros in this direction's columns of y (N, D·H_out) past each row's length (y is not zeroed
    beforehand), spread over the grid."""
    total, batch = y.shape[0], lengths.shape[0]
    time_steps = total // batch
    for index in range(cuda.grid(1), total, cuda.gridsize(1)):
        b, t = (
            (index // time_steps, index % time_steps)
            if batch_first
            else (index % batch, index // batch)
        )
        if t >= lengths[b]:
            for k in range(out):
                y[index, direction * out + k] = 0


@cuda.jit(cache=CACHE)
def lstm_sequence(
    projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
    h, h_unprojected, c, y, lengths, steps, direction, reverse, batch_first, trace,
    weights_in_shared, unit_blocks, lanes,
):  # fmt: skip
    """One direction of one layer over the whole sequence, in one cooperative launch, each
    (unit, row)'s dot products shared by ``lanes`` threads (``sequence_step``): for small batches.

    projected (N, D·4H): x·W_ihᵀ + b from ``input_projection``, N = B·T rows ordered as x
    (b·T + t if ``batch_first`` else t·B + b). w_hh (4H, H_out), w_hr (H_out, H) or (0, 0); the
    cell options as ``cpu.lstm_rows_forward``'s, for this direction. h (2, B, H_out): h0 in h[0],
    a double buffer; h_unprojected (B, H) scratch; c (B, H) in/out; y (N, D·H_out), this
    direction's columns written (zeros past each length); lengths (B,); ``steps`` = max length;
    trace (5, B, T, H) or (0, 0, 0, 0), see ``finish_unit``. Launch: ``unit_blocks`` × the
    batch slices blocks, ``lanes`` threads a (unit, row) pair (``plan_sequence``).
    The final h is h[steps % 2]. Dynamic shared memory: 4·threads values for the partial sums,
    then 4·⌈H/unit_blocks⌉·H_out when ``weights_in_shared``.
    """
    grid = cuda.cg.this_grid()
    hidden = c.shape[1]
    out = h.shape[2]
    shared = cuda.shared.array(0, dtype=w_hh.dtype)
    if weights_in_shared:  # this block's rows of W_hh, gate-major: (4, owned, H_out)
        units = (hidden + unit_blocks - 1) // unit_blocks
        first = (cuda.blockIdx.x % unit_blocks) * units
        owned = min(units, hidden - first)
        weights = 4 * cuda.blockDim.x
        for index in range(cuda.threadIdx.x, 4 * max(owned, 0) * out, cuda.blockDim.x):
            shared_row, k = index // out, index % out
            gate, local = shared_row // owned, shared_row % owned
            shared[weights + index] = w_hh[gate * hidden + first + local, k]
        cuda.syncthreads()
    for step in range(steps):
        sequence_step(
            step, projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
            h, h_unprojected, c, y, lengths, direction, reverse, batch_first, shared,
            weights_in_shared, unit_blocks, lanes, trace,
        )  # fmt: skip
        grid.sync()
        if w_hr.shape[0] > 0:
            project_step(step, w_hr, h, h_unprojected, y, lengths, direction, reverse,
                         batch_first)  # fmt: skip
            grid.sync()
    zero_past_lengths(y, lengths, direction, out, batch_first)


@cuda.jit(cache=CACHE)
def lstm_sequence_tiled(
    projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
    h, h_unprojected, c, y, lengths, steps, direction, reverse, batch_first, trace,
):  # fmt: skip
    """``lstm_sequence`` for large batches: each step's recurrent product a register-tiled GEMM
    (``tiled_step``). Arguments as ``lstm_sequence``'s; launch: blocks of GEMM_THREADS² threads,
    as many as the device holds at once up to the number of tiles (``plan_tiled``). A kernel of
    its own rather than a flag of ``lstm_sequence``: each compiles only its own step, and keeps
    its own register count (and so its blocks an SM)."""
    grid = cuda.cg.this_grid()
    for step in range(steps):
        tiled_step(
            step, projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
            h, h_unprojected, c, y, lengths, direction, reverse, batch_first, trace,
        )  # fmt: skip
        grid.sync()
        if w_hr.shape[0] > 0:
            project_step(step, w_hr, h, h_unprojected, y, lengths, direction, reverse,
                         batch_first)  # fmt: skip
            grid.sync()
    zero_past_lengths(y, lengths, direction, h.shape[2], batch_first)


def plan_sequence(hidden, out, batch, itemsize, threads, resident_blocks):
    """``(unit_blocks, batch_slices, lanes, weights_in_shared, shared_bytes)`` for
    ``lstm_sequence`` with ``threads`` a block; ``resident_blocks(shared_bytes)``: how many blocks
    the device holds at once (the cooperative limit).

    The hidden units go to as many blocks as it takes for each block's slice of W_hh
    (4·units·H_out values) to fit in ``SHARED_BYTES`` beside the partial sums (4·threads values),
    when the device holds them all at once; otherwise to as many blocks as it holds with the
    partial sums alone, which read W_hh from global memory (L2). Blocks still free split the
    batch rows: each unit slice runs in ``batch_slices`` blocks. ``lanes``: threads a (unit, row)
    pair, from SEQUENCE_LANES down to SEQUENCE_MIN_LANES while a block has more pairs than
    threads. The simulator runs one block (its grid barrier is a block barrier).
    """
    scratch = 4 * threads * itemsize
    unit_bytes = 4 * out * itemsize
    fit = (SHARED_BYTES - scratch) // unit_bytes  # units whose W_hh rows a block holds
    max_blocks = 1 if config.ENABLE_CUDASIM else resident_blocks(SHARED_BYTES)
    in_shared = fit > 0 and math.ceil(hidden / fit) <= max_blocks
    if in_shared:
        unit_blocks = math.ceil(hidden / fit)
    else:
        max_blocks = 1 if config.ENABLE_CUDASIM else resident_blocks(scratch)
        if max_blocks < 1:
            raise RuntimeError(
                f"lstm_sequence: no block of {threads} threads fits on this GPU (registers); "
                "lower lstm_numba.gpu.SEQUENCE_THREADS"
            )
        unit_blocks = min(max_blocks, hidden)
    units = math.ceil(hidden / unit_blocks)
    rows = math.ceil(batch / max(1, min(batch, max_blocks // unit_blocks)))
    lanes = SEQUENCE_LANES
    while lanes > SEQUENCE_MIN_LANES and units * rows * lanes > threads:
        lanes //= 2
    shared_bytes = scratch + (units * unit_bytes if in_shared else 0)
    return unit_blocks, math.ceil(batch / rows), lanes, in_shared, shared_bytes


def takes_tiled(batch, hidden):
    """Whether a layer of ``batch`` rows and ``hidden`` units runs ``lstm_sequence_tiled``: from
    ``TILED_MIN_PAIRS`` (row, unit) pairs, with a full tile of rows (GEMM_ROWS: every win measured
    had one; fewer rows leave most of each tile's arithmetic unused)."""
    return batch >= GEMM_ROWS and batch * hidden >= TILED_MIN_PAIRS


def plan_tiled(batch, hidden, resident_blocks):
    """Blocks of ``lstm_sequence_tiled``: one a tile of GEMM_ROWS rows × GEMM_COLUMNS / 4 units, at
    most ``resident_blocks`` (the cooperative limit); one under the simulator."""
    tiles = math.ceil(batch / GEMM_ROWS) * math.ceil(hidden / (GEMM_COLUMNS // 4))
    return 1 if config.ENABLE_CUDASIM else min(tiles, resident_blocks)


def _resident_blocks(kernel, args, threads):
    """How many blocks of ``kernel`` (``threads`` each) the device holds at once, as a function
    of their dynamic shared memory, for these arguments' types."""
    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    return lambda shared_bytes: compiled.max_cooperative_grid_blocks(threads, shared_bytes)


def configured(kernel, *launch):
    """``kernel[launch]`` without numba-cuda's warning for grids under 128 blocks: ours are that
    small on purpose (the sequence kernels hold at most the blocks the device runs at once, and
    fewer when W_hh's slices or the tiles are fewer; small shapes have few GEMM tiles)."""
    with warnings.catch_warnings():
        # numba-cuda's NumbaPerformanceWarning, whose module moved between versions
        warnings.filterwarnings("ignore", message="Grid size .* under-utilization")
        return kernel[launch]


def device_view(array, index):
    """``array[index]`` of a device array, also when it holds no elements (no projection: W_hr
    (D, 0, 0); no traces: (D·L, 0, 0, 0, 0)): Numba cannot index those (their data pointer is
    NULL), so a new empty array of the view's shape stands in."""
    if array.size:
        return array[index]
    return cuda.device_array(np.empty(array.shape, array.dtype)[index].shape, array.dtype)


def lstm_layer_forward(
    x, w_ih, w_hh, w_hr, bias, cell, h, c, y, lengths, steps, backward, batch_first, traces
):
    """One layer, every direction, on device arrays; results in ``h``, ``c`` and ``y``.

    x (N, I) with N = B·T rows in x's order; w_ih (D·4H, I), bias (D·4H,): the directions
    stacked; w_hh (D, 4H, H_out); w_hr (D, H_out, H) or (D, 0, 0); cell as
    ``cpu.lstm_rows_forward``'s, on the device; h (D, 2, B, H_out) with h0 in h[:, 0], the final
    h in h[:, steps % 2]; c (D, B, H) in/out; y (N, D·H_out); lengths (B,) int64; ``steps`` the
    longest length; ``backward``: the only direction reads backwards (ONNX's direction="reverse");
    traces (D, 5, B, T, H) or (D, 0, 0, 0, 0).
    All arrays of one float dtype but ``lengths`` and the activation kinds.
    """
    rows, columns = x.shape[0], w_ih.shape[0]
    projected = cuda.device_array((rows, columns), dtype=x.dtype)
    blocks = (math.ceil(columns / GEMM_COLUMNS), math.ceil(rows / GEMM_ROWS))
    configured(input_projection, blocks, (GEMM_THREADS,) * 2)(x, w_ih, bias, projected)
    onnx, kinds, parameters, peepholes, bound, input_forget = cell
    directions, _, batch, out = h.shape
    hidden = c.shape[2]
    h_unprojected = cuda.device_array((batch, hidden), dtype=x.dtype)
    simulated = config.ENABLE_CUDASIM
    for d in range(directions):
        args = (
            projected, w_hh[d], device_view(w_hr, d), onnx, kinds[d], parameters[d],
            peepholes[d], bound, input_forget, h[d], h_unprojected, c[d], y, lengths, steps, d,
            d == 1 or backward, batch_first, device_view(traces, d),
        )  # fmt: skip
        if takes_tiled(batch, hidden):
            threads = GEMM_THREADS * GEMM_THREADS
            resident = None if simulated else _resident_blocks(lstm_sequence_tiled, args, threads)
            blocks = plan_tiled(batch, hidden, None if simulated else resident(0))
            configured(lstm_sequence_tiled, blocks, threads)(*args)
            continue
        threads = SEQUENCE_THREADS
        resident = (
            None if simulated else _resident_blocks(lstm_sequence, (*args, True, 1, 1), threads)
        )
        unit_blocks, slices, lanes, in_shared, shared_bytes = plan_sequence(
            hidden, out, batch, x.dtype.itemsize, threads, resident
        )
        launch = unit_blocks * slices, threads, 0, shared_bytes
        configured(lstm_sequence, *launch)(*args, in_shared, unit_blocks, lanes)


def upload_layer(stacks, cell):
    """A layer's weights (``LSTM``'s stacks over directions) and cell options on the device, in
    ``lstm_layer_forward``'s form."""
    directions, gate_rows = stacks["weight_ih"].shape[:2]
    onnx, kinds, parameters, peepholes, bound, input_forget = cell
    return {
        "weight_ih": cuda.to_device(stacks["weight_ih"].reshape(directions * gate_rows, -1)),
        "bias": cuda.to_device((stacks["bias_ih"] + stacks["bias_hh"]).reshape(-1)),
        "weight_hh": cuda.to_device(stacks["weight_hh"]),
        "weight_hr": cuda.to_device(stacks["weight_hr"]),
        "cell": (
            onnx,
            cuda.to_device(kinds),
            cuda.to_device(parameters),
            cuda.to_device(np.ascontiguousarray(peepholes)),
            bound,
            input_forget,
        ),
    }


def lstm_forward(layers, x, h0, c0, lengths, steps, backward, batch_first, traces):
    """The whole stack on device arrays: ``layers`` from ``upload_layer``; x (B, T, I) if
    ``batch_first`` else (T, B, I), C-contiguous; h0 (D·L, B, H_out), c0 (D·L, B, H) (not
    modified); lengths (B,) int64; ``steps`` the longest length; ``backward`` as
    ``lstm_layer_forward``'s; traces (D·L, 5, B, T, H) written, or (D·L, 0, 0, 0, 0).

    Returns device arrays ``y, (h_n, c_n)`` shaped as ``LSTM.__call__``'s (B ≥ 1). Every layer
    writes one y: a layer's input projection (``input_projection``, the whole sequence) runs
    before its sequence kernels on the same stream, so the layers after the first run in place.
    """
    directions, _, out = layers[0]["weight_hh"].shape
    leading = x.shape[:2]
    batch = leading[0] if batch_first else leading[1]
    h_n = cuda.device_array(h0.shape, dtype=x.dtype)
    c_n = cuda.device_array(c0.shape, dtype=x.dtype)
    c_n.copy_to_device(c0)
    layer_input = x.reshape(leading[0] * leading[1], x.shape[2])
    h = cuda.device_array((directions, 2, batch, out), dtype=x.dtype)
    for layer, weights in enumerate(layers):
        states = slice(layer * directions, (layer + 1) * directions)
        for d in range(directions):
            h[d, 0].copy_to_device(h0[states.start + d])
        if layer == 0:
            y = cuda.device_array((layer_input.shape[0], directions * out), dtype=x.dtype)
        # deeper layers overwrite their input: the projection has read all of it by then
        lstm_layer_forward(
            layer_input,
            weights["weight_ih"],
            weights["weight_hh"],
            weights["weight_hr"],
            weights["bias"],
            weights["cell"],
            h,
            c_n[states],
            y,
            lengths,
            steps,
            backward,
            batch_first,
            device_view(traces, states),
        )
        for d in range(directions):
            h_n[states.start + d].copy_to_device(h[d, steps % 2])
        layer_input = y
    return y.reshape(*leading, directions * out), (h_n, c_n)
