"""The recurrent product's micro-kernel: a register tile of h·W_hhᵀ written in LLVM IR.

A GEMM runs at the machine's speed when its inner loop keeps a tile of the output in vector
registers and, per step k of the reduction, loads one row of weights and broadcasts one value per
output row (an outer product): no horizontal sums, and every load feeds several multiply-adds.
Numba has no vector type and LLVM does not turn scalar code into such a tile, so ``tile(rows)``
writes it as an ``@intrinsic``: ``rows`` batch rows × two vectors of weight columns, the
accumulators held in registers for the whole loop over k.

The weights come packed in panels (``cpu.pack_panels``): panel p is W_hh's rows
[W·p, W·(p + 1)) transposed to (H, W), W = ``panel_width(itemsize)``, so the tile reads it as one
contiguous stream.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _target_features():
    """The CPU features Numba's code generator compiles for: ``NUMBA_CPU_FEATURES``, else the
    host's (as ``numba.core.codegen`` takes them), a set of ``"+name"`` strings."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return set(features.split(","))


AVX512 = "+avx512f" in _target_features()
"""Whether the kernels are compiled for AVX-512: 512-bit vectors and 32 vector registers."""

VECTOR_BYTES = 64 if AVX512 else 32
"""Width of the vectors the tile is written in: AVX-512's 512 bits where the CPU has it, else
AVX2's 256 (LLVM splits them on narrower machines). An Intel Xeon with two 512-bit FMA units
(Skylake-SP to Sapphire Rapids and later) runs 256-bit vectors at half its multiply-add peak; a Zen
4, which executes a 512-bit instruction as two 256-bit halves, ran the tile as fast either way
(docs/performance.md, item 63). LLVM does not widen vectors written narrower. (Untested: Xeons
with one 512-bit FMA unit, Skylake-SP and Cascade Lake Bronze, Silver and Gold 5xxx, have one
peak at either width and lower their clock for 512-bit code.)"""

MAX_TILE_ROWS = 5
"""Batch rows per tile: 5 rows × 2 vectors = 10 accumulators, beside the 2 weight vectors and one
broadcast within AVX2's 16 vector registers, enough independent multiply-adds to hide their
latency. (It was 6, BLIS's Haswell tile's shape; 5 ran forwards of 6 to 256 rows as fast on a
Zen 4, and the units split then needs no tile set of its own, docs/performance.md.)"""

PANELS_PER_TILE = 2 if AVX512 else 1
"""Panels a tile reads at each step of k, where the registers hold it: two with AVX-512's 32
vector registers (5 rows × 4 vectors = 20 accumulators, 4 weight vectors and a broadcast), one
with AVX2's 16. On a Zen 4, two panels ran 3 rows 1.3× faster than one (6 accumulators cannot
hide the multiply-add latency), 4–5 rows 1.06–1.13×, 6 rows 1.03–1.07× (docs/performance.md).
Two rows read two panels everywhere (``tile_2``)."""


@njit(inline="always")
def panel_width(itemsize):
    """Weight rows per panel: two vectors of ``itemsize``-byte floats (32 float32, 16 float64 with
    AVX-512; 16 and 8 with AVX2)."""
    return 2 * VECTOR_BYTES // itemsize


@njit(inline="always")
def panel_count(rows, itemsize):
    """Panels that hold ``rows`` weight rows of ``itemsize``-byte floats: an even count (zeros
    past the last row), since the tiles read the panels in pairs of ``panel_width`` rows each."""
    return 2 * -(-rows * itemsize // (4 * VECTOR_BYTES))


CACHE_LINE_BYTES = 64
"""Bytes of a cache line: the panels start on one (``empty_panels``)."""


@njit(inline="always")
def empty_panels(shape, like):
    """Uninitialized C-contiguous panels of ``shape`` (…, P, H, W) and ``like``'s dtype whose data
    start on a cache line: a panel's row, two vectors (64 or 128 bytes), then never straddles two
    lines (a 512-bit load across two counts twice; one row's product ran 3–10 % faster from
    aligned panels on a Zen 4, docs/performance.md, item 63). For compiled code (``pack_panels``):
    from Python, the address arithmetic costs ≈ 2.7 µs a call."""
    size = 1
    for extent in shape:
        size *= extent
    buffer = np.empty(size + CACHE_LINE_BYTES // like.itemsize, like.dtype)
    past_line = np.int64(buffer.ctypes.data) % CACHE_LINE_BYTES
    start = (CACHE_LINE_BYTES - past_line) % CACHE_LINE_BYTES // like.itemsize
    return buffer[start : start + size].reshape(shape)


def _emit_tile(context, builder, signature, args, rows, panel_count, vector_bytes):
    """LLVM IR of ``tile(h, panels, out, b0, p)`` for ``rows`` rows and ``panel_count`` panels
    of two ``vector_bytes`` vectors' width (see ``_tile``)."""
    h_type, panels_type, out_type = signature.args[:3]
    h_array = context.make_array(h_type)(context, builder, args[0])
    panels_array = context.make_array(panels_type)(context, builder, args[1])
    out_array = context.make_array(out_type)(context, builder, args[2])
    b0, p = args[3], args[4]
    dtype = np.dtype(str(h_type.dtype))
    lanes = vector_bytes // dtype.itemsize
    align = dtype.itemsize  # rows of h, panels and out start anywhere: unaligned vectors
    vector = ir.VectorType(context.get_value_type(h_type.dtype), lanes)
    index = ir.IntType(64)
    multiply_add = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vector, [vector] * 3),
        f"llvm.fmuladd.v{lanes}f{dtype.itemsize * 8}",
    )

    def pointer(array_type, array, *indices):
        return cgutils.get_item_pointer(context, builder, array_type, array, indices)

    def row(r):
        return builder.add(b0, index(r))

    h_rows = [pointer(h_type, h_array, row(r), index(0)) for r in range(rows)]
    panel_starts = [
        pointer(panels_type, panels_array, builder.add(p, index(q)), index(0), index(0))
        for q in range(panel_count)
    ]
    vectors = 2 * panel_count
    zeros = ir.Constant(vector, None)
    broadcast = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    # allocas of vectors: LLVM promotes them to registers (phi nodes of the loop over k)
    sums = [
        [cgutils.alloca_once_value(builder, zeros) for _ in range(vectors)] for _ in range(rows)
    ]
    hidden = cgutils.unpack_tuple(builder, h_array.shape, 2)[1]
    with cgutils.for_range(builder, hidden) as loop:
        k = loop.index
        weights = []
        for panel in panel_starts:
            panel_row = builder.gep(panel, [builder.mul(k, index(2 * lanes))])
            panel_row = builder.bitcast(panel_row, vector.as_pointer())
            for v in range(2):
                weights.append(builder.load(builder.gep(panel_row, [index(v)]), align=align))
        for r in range(rows):
            value = builder.load(builder.gep(h_rows[r], [k]))
            value = builder.insert_element(zeros, value, ir.IntType(32)(0))
            value = builder.shuffle_vector(value, zeros, broadcast)
            for v in range(vectors):
                total = builder.call(multiply_add, [value, weights[v], builder.load(sums[r][v])])
                builder.store(total, sums[r][v])
    column = builder.mul(p, index(2 * lanes))
    for r in range(rows):
        out_row = pointer(out_type, out_array, row(r), column)
        out_row = builder.bitcast(out_row, vector.as_pointer())
        for v in range(vectors):
            target = builder.gep(out_row, [index(v)])
            builder.store(builder.load(sums[r][v]), target, align=align)
    return context.get_dummy_value()


def _tile(rows, panel_count=1, vector_bytes=VECTOR_BYTES):
    """An intrinsic ``tile(h, panels, out, b0, p)``: out[b0 + r, W·(p + q) : W·(p + q + 1)] =
    h[b0 + r] · panels[p + q] for r < ``rows``, q < ``panel_count``; h (B, H), panels (P, H, W),
    out (B, ≥ W·P), all C-contiguous, of one float dtype; W two ``vector_bytes`` vectors of it."""

    @intrinsic
    def tile(typingctx, h, panels, out, b0, p):
        arrays = (h, panels, out)
        if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays):
            return None  # the IR steps through rows with unit stride
        if not (isinstance(h.dtype, types.Float) and h.dtype == panels.dtype == out.dtype):
            return None  # the IR is written for one float type

        def codegen(context, builder, signature, args):
            return _emit_tile(context, builder, signature, args, rows, panel_count, vector_bytes)

        return types.void(h, panels, out, b0, p), codegen

    return tile


def _interleave_masks(lanes):
    """Shuffle masks of two ``lanes``-wide vectors a, b: their low halves interleaved (a0 b0 a1
    b1 …) and their high halves (a_{L/2} b_{L/2} …), L = lanes."""
    half = lanes // 2
    low = [m // 2 + (m % 2) * lanes for m in range(lanes)]
    return low, [half + mask for mask in low]


def _emit_transpose(context, builder, signature, args, vector_bytes):
    """LLVM IR of ``transpose_into_panel`` for ``vector_bytes`` vectors (see ``_transpose``)."""
    weights_type, rows_type, _, _, panels_type, _, _ = signature.args
    weights = context.make_array(weights_type)(context, builder, args[0])
    rows = context.make_array(rows_type)(context, builder, args[1])
    panels = context.make_array(panels_type)(context, builder, args[4])
    first, k0, p, j0 = args[2], args[3], args[5], args[6]
    dtype = np.dtype(str(weights_type.dtype))
    lanes = vector_bytes // dtype.itemsize
    vector = ir.VectorType(context.get_value_type(weights_type.dtype), lanes)
    index = ir.IntType(64)

    def pointer(array_type, array, *indices):
        return cgutils.get_item_pointer(context, builder, array_type, array, indices)

    vectors = []
    for i in range(lanes):
        row = builder.load(pointer(rows_type, rows, builder.add(first, index(i))))
        source = builder.bitcast(pointer(weights_type, weights, row, k0), vector.as_pointer())
        vectors.append(builder.load(source, align=dtype.itemsize))
    # interleaving vectors i and i + L/2 into 2i and 2i + 1, log2(L) times, transposes: each
    # time, the bits of (vector, lane) rotate by one, so that after log2(L) they have swapped
    masks = [ir.Constant(ir.VectorType(ir.IntType(32), lanes), m) for m in _interleave_masks(lanes)]
    half = lanes // 2
    for _ in range(lanes.bit_length() - 1):
        pairs = [(vectors[i], vectors[i + half]) for i in range(half)]
        vectors = [builder.shuffle_vector(a, b, mask) for a, b in pairs for mask in masks]
    for i, values in enumerate(vectors):
        target = pointer(panels_type, panels, p, builder.add(k0, index(i)), j0)
        builder.store(values, builder.bitcast(target, vector.as_pointer()), align=dtype.itemsize)
    return context.get_dummy_value()


def _transpose(vector_bytes=VECTOR_BYTES):
    """An intrinsic ``transpose_into_panel(weights, rows, first, k0, panels, p, j0)``:
    ``panels[p, k0 + i, j0 + j] = weights[rows[first + j], k0 + i]`` for i, j < L, L = the lanes
    of a ``vector_bytes`` vector (16 float32 or 8 float64 with AVX-512, 8 or 4 with AVX2): a block
    of W_hh's rows transposed in registers, the packing's inner step (``cpu.pack_rows``; 3–4.5×
    faster than a loop of scalars at H = 256–1024). weights (·, K) and panels (P, K, W)
    C-contiguous, of one float dtype; rows (·,) int64."""

    @intrinsic
    def transpose_into_panel(typingctx, weights, rows, first, k0, panels, p, j0):
        if not all(isinstance(a, types.Array) and a.layout == "C" for a in (weights, panels)):
            return None  # the IR reads and writes rows with unit stride
        if not (isinstance(weights.dtype, types.Float) and weights.dtype == panels.dtype):
            return None  # the IR is written for one float type
        if not (isinstance(rows, types.Array) and rows.dtype == types.int64):
            return None  # the IR indexes with the row numbers as 64-bit integers

        def codegen(context, builder, signature, args):
            return _emit_transpose(context, builder, signature, args, vector_bytes)

        return types.void(weights, rows, first, k0, panels, p, j0), codegen

    return transpose_into_panel


transpose_into_panel = _transpose()
tile_1, tile_3, tile_4, tile_5 = (_tile(rows, PANELS_PER_TILE) for rows in (1, 3, 4, 5))
tile_2 = _tile(2, panel_count=2)
"""Two rows × two panels on every machine: eight accumulators, enough to hide the multiply-add
latency that a one-panel tile of two rows (four accumulators) waits on. With AVX2's 16 vector
registers, three rows × two panels would need more than there are (it ran at half the speed)."""
