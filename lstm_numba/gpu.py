"""GPU kernels (``@cuda.jit``, needs ``numba-cuda``): the LSTM forward on CUDA device arrays.

A layer runs as two kernels, whatever T is:

1. ``input_projection``: x·W_ihᵀ + b for every time step and both directions in one register-tiled
   shared-memory GEMM, (N, I) · (D·4H, I)ᵀ → (N, D·4H) with N = B·T rows in x's own order.
2. ``lstm_sequence``: one launch per direction runs the whole sequence (the "persistent RNN"
   design). Each block owns a slice of hidden units (and, when blocks are left over, a slice of
   the batch rows) and computes all four gates of them, so the cell update is fused and the
   pre-activations never go to global memory; its slice of W_hh is loaded into shared memory once
   when it fits (``weights_in_shared``), read from global memory (L2) otherwise. Groups of
   threads (``lanes``) share each (unit, row)'s dot products, so that even batch 1 keeps the
   threads busy. A grid-wide barrier (cooperative launch) separates the steps.

The gate math is ``lstm_numba.equations``, the same functions the CPU kernels inline, compiled by
Numba as CUDA device functions.

Under Numba's CUDA simulator a grid barrier only synchronises one block (blocks run one after
another), so ``lstm_sequence`` must run as a single block there (``plan_sequence`` does this);
the multi-block unit slicing is exercised with one-step sequences, where no barrier is needed.
"""

import math

import numpy as np
from numba import config, cuda

from lstm_numba._config import CACHE
from lstm_numba.equations import lstm_gates, lstm_gates_onnx

GEMM_THREADS = 16
"""``input_projection`` blocks are GEMM_THREADS × GEMM_THREADS threads."""
GEMM_WORK = 4
"""Each thread computes GEMM_WORK × GEMM_WORK outputs."""
GEMM_TILE = GEMM_THREADS * GEMM_WORK
"""A block computes a GEMM_TILE × GEMM_TILE tile of the output (a constant: it sizes shared
arrays)."""
GEMM_DEPTH = 16
"""Slice of the inner dimension staged in shared memory per iteration."""

SEQUENCE_THREADS = 256
"""Threads per ``lstm_sequence`` block."""
SEQUENCE_LANES = 32
"""Most threads that share one (unit, row)'s four dot products, each summing every lanes-th term
(a warp: its loads of h and W_hh are coalesced)."""
SEQUENCE_MIN_LANES = 4
"""Fewest (at large batch: more groups for the rows, fewer partial sums to add up). On an H200,
4 ran 4-17 % faster than 8 at every shape of a sweep (performance.md, GPU)."""
SHARED_BYTES = 48 * 1024
"""Dynamic shared memory a block may use without opting in, on every CUDA GPU since Kepler."""


@cuda.jit(cache=CACHE)
def input_projection(a, w, bias, out):
    """out (M, N) = a (M, K) · wᵀ + bias, w (N, K), bias (N,); one dtype.

    Launch: blocks (⌈N/GEMM_TILE⌉, ⌈M/GEMM_TILE⌉) of (GEMM_THREADS, GEMM_THREADS) threads. A
    thread owns the outputs at rows ty + i·GEMM_THREADS and columns tx + j·GEMM_THREADS of its
    block's tile, so shared-memory reads are conflict-free and stores are coalesced.
    """
    tile = GEMM_TILE
    a_tile = cuda.shared.array((GEMM_DEPTH, GEMM_TILE), dtype=a.dtype)
    w_tile = cuda.shared.array((GEMM_DEPTH, GEMM_TILE), dtype=a.dtype)
    acc = cuda.local.array((GEMM_WORK, GEMM_WORK), dtype=a.dtype)
    a_values = cuda.local.array(GEMM_WORK, dtype=a.dtype)
    w_values = cuda.local.array(GEMM_WORK, dtype=a.dtype)
    rows, inner = a.shape
    columns = w.shape[0]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    thread = ty * GEMM_THREADS + tx
    row0, column0 = cuda.blockIdx.y * tile, cuda.blockIdx.x * tile
    for i in range(GEMM_WORK):
        for j in range(GEMM_WORK):
            acc[i, j] = 0
    for k0 in range(0, inner, GEMM_DEPTH):
        # Stage a (tile × depth) and w (tile × depth); consecutive threads read consecutive k.
        for index in range(thread, GEMM_DEPTH * tile, GEMM_THREADS * GEMM_THREADS):
            k, r = index % GEMM_DEPTH, index // GEMM_DEPTH
            inside = k0 + k < inner
            if inside and row0 + r < rows:
                a_tile[k, r] = a[row0 + r, k0 + k]
            else:
                a_tile[k, r] = 0
            if inside and column0 + r < columns:
                w_tile[k, r] = w[column0 + r, k0 + k]
            else:
                w_tile[k, r] = 0
        cuda.syncthreads()
        for k in range(GEMM_DEPTH):
            for i in range(GEMM_WORK):
                a_values[i] = a_tile[k, ty + i * GEMM_THREADS]
            for j in range(GEMM_WORK):
                w_values[j] = w_tile[k, tx + j * GEMM_THREADS]
            for i in range(GEMM_WORK):
                for j in range(GEMM_WORK):
                    acc[i, j] += a_values[i] * w_values[j]
        cuda.syncthreads()
    for i in range(GEMM_WORK):
        row = row0 + ty + i * GEMM_THREADS
        for j in range(GEMM_WORK):
            column = column0 + tx + j * GEMM_THREADS
            if row < rows and column < columns:
                out[row, column] = acc[i, j] + bias[column]


@cuda.jit(device=True)
def sequence_step(
    step, projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
    h, h_unprojected, c, y, lengths, direction, reverse, batch_first, shared, weights_in_shared,
    unit_blocks, lanes, trace,
):  # fmt: skip
    """The cell update of one time step for the hidden units and batch rows this block owns.

    The block's threads form groups of ``lanes``. A group takes one (unit j, row b) pair at a
    time, pairs row-fastest (the groups of a warp read the same weights); each of its threads sums
    every lanes-th term of W_hh[gate·H + j] · h_prev[b] for the four gates, and the group's first
    thread adds up the partial sums (shared[:4·threads]), applies the gates and writes C, and h
    (into h[1 − step % 2]) or, with a projection, o ⊙ h(C) into ``h_unprojected``
    (``project_step`` finishes h). Rows whose sequence has ended carry their state over.
    trace: (5, B, T, H) records f, i, C̃, o, C, or (0, 0, 0, 0) for none.
    """
    batch, hidden = c.shape
    out = h.shape[2]
    threads = cuda.blockDim.x
    thread = cuda.threadIdx.x
    steps = projected.shape[0] // batch
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
    projecting = w_hr.shape[0] > 0
    h_prev, h_next = h[step % 2], h[1 - step % 2]
    zero = type(c[0, 0])(0)
    pairs = owned * owned_rows
    for start in range(0, pairs, groups):  # the same rounds in every thread: they synchronise
        pair = start + group
        local, b = pair // owned_rows, first_row + pair % owned_rows
        j = first_unit + local
        length = lengths[b]
        sum_i, sum_f, sum_g, sum_o = zero, zero, zero, zero
        if pair < pairs and step < length:
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
            if step >= length:
                if not projecting:
                    h_next[b, j] = h_prev[b, j]
            else:
                t = length - 1 - step if reverse else step
                row = b * steps + t if batch_first else t * batch + b
                column = direction * 4 * hidden + j
                z_i, z_f = projected[row, column], projected[row, column + hidden]
                z_g, z_o = projected[row, column + 2 * hidden], projected[row, column + 3 * hidden]
                for other in range(thread, thread + lanes):
                    z_i += shared[other]
                    z_f += shared[threads + other]
                    z_g += shared[2 * threads + other]
                    z_o += shared[3 * threads + other]
                if onnx:
                    f, i, g, o, c_value, h_value = lstm_gates_onnx(
                        z_i, z_f, z_g, z_o, c[b, j], peepholes[0, j], peepholes[1, j],
                        peepholes[2, j], bound, input_forget, kinds[0], parameters[0, 0],
                        parameters[0, 1], kinds[1], parameters[1, 0], parameters[1, 1], kinds[2],
                        parameters[2, 0], parameters[2, 1],
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
                    y[row, direction * out + j] = h_value
        cuda.syncthreads()


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


@cuda.jit(cache=CACHE)
def lstm_sequence(
    projected, w_hh, w_hr, onnx, kinds, parameters, peepholes, bound, input_forget,
    h, h_unprojected, c, y, lengths, steps, direction, reverse, batch_first, trace,
    weights_in_shared, unit_blocks, lanes,
):  # fmt: skip
    """One direction of one layer over the whole sequence, in one cooperative launch.

    projected (N, D·4H): x·W_ihᵀ + b from ``input_projection``, N = B·T rows ordered as x
    (b·T + t if ``batch_first`` else t·B + b). w_hh (4H, H_out), w_hr (H_out, H) or (0, 0); the
    cell options as ``cpu.lstm_rows_forward``'s, for this direction. h (2, B, H_out): h0 in h[0],
    a double buffer; h_unprojected (B, H) scratch; c (B, H) in/out; y (N, D·H_out), this
    direction's columns written (zeros past each length); lengths (B,); ``steps`` = max length;
    trace (5, B, T, H) or (0, 0, 0, 0), see ``sequence_step``. Launch: ``unit_blocks`` × the
    batch slices blocks, ``lanes`` threads a (unit, row) pair (``plan_sequence``).
    The final h is h[steps % 2]. Dynamic shared memory: 4·threads values for the partial sums,
    then 4·⌈H/unit_blocks⌉·H_out when ``weights_in_shared``.
    """
    grid = cuda.cg.this_grid()
    batch, hidden = c.shape
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
    # Zeros past each sequence's length (y is not zeroed beforehand).
    total = projected.shape[0]
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


def _resident_blocks(args, threads):
    """``resident_blocks`` for ``plan_sequence``: how many ``lstm_sequence`` blocks of
    ``threads`` with a given dynamic shared memory the device holds at once."""
    kernel = lstm_sequence.compile(tuple(lstm_sequence.typeof_pyval(a) for a in args))
    return lambda shared_bytes: kernel.max_cooperative_grid_blocks(threads, shared_bytes)


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
    tile = GEMM_TILE
    projected = cuda.device_array((rows, columns), dtype=x.dtype)
    input_projection[(math.ceil(columns / tile), math.ceil(rows / tile)), (GEMM_THREADS,) * 2](
        x, w_ih, bias, projected
    )
    onnx, kinds, parameters, peepholes, bound, input_forget = cell
    directions, _, batch, out = h.shape
    hidden = c.shape[2]
    h_unprojected = cuda.device_array((batch, hidden), dtype=x.dtype)
    for d in range(directions):
        args = (
            projected, w_hh[d], device_view(w_hr, d), onnx, kinds[d], parameters[d],
            peepholes[d], bound, input_forget, h[d], h_unprojected, c[d], y, lengths, steps, d,
            d == 1 or backward, batch_first, device_view(traces, d),
        )  # fmt: skip
        threads = SEQUENCE_THREADS
        resident = None if config.ENABLE_CUDASIM else _resident_blocks((*args, True, 1, 1), threads)
        unit_blocks, slices, lanes, in_shared, shared_bytes = plan_sequence(
            hidden, out, batch, x.dtype.itemsize, threads, resident
        )
        lstm_sequence[unit_blocks * slices, threads, 0, shared_bytes](
            *args, in_shared, unit_blocks, lanes
        )


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

    Returns device arrays ``y, (h_n, c_n)`` shaped as ``LSTM.__call__``'s (B ≥ 1).
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
        y = cuda.device_array((layer_input.shape[0], directions * out), dtype=x.dtype)
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
