"""Atomic operations on int64 arrays for CPU kernels, which Numba does not provide: the handoff
between the threads of ``cpu.lstm_unit_split_forward``, which share every step of one sequence.

Each is an ``@intrinsic`` emitting LLVM's atomic instruction on ``counters[index]`` (a C-contiguous
int64 array, the index not checked). A plain load in a spin loop may be hoisted out of it by the
compiler; an atomic one is not, and acquire/release ordering makes the data a thread wrote before
its release visible to the thread whose acquire reads it.
"""

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _element_pointer(context, builder, signature, args):
    """Pointer to ``counters[index]`` from an intrinsic's first two arguments."""
    array_type = signature.args[0]
    array = context.make_array(array_type)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, array_type, array, [args[1]])


def _check(counters):
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        raise TypeError(f"counters: expected an int64 array, got {counters}")


@intrinsic
def load(typingctx, counters, index):
    """``counters[index]``, read with acquire ordering."""
    _check(counters)

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature, args)
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(counters, types.intp), codegen


@intrinsic
def add(typingctx, counters, index, value):
    """``counters[index] += value`` in one step (acquire and release); returns the old value."""
    _check(counters)

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature, args)
        return builder.atomic_rmw("add", pointer, args[2], "acq_rel")

    return types.int64(counters, types.intp, types.int64), codegen


@intrinsic
def claim(typingctx, counters, index, expected):
    """``counters[index] = expected + 1`` if it holds ``expected`` (compare-and-swap, acquire and
    release); returns whether it did: of several threads claiming the same value, one wins."""
    _check(counters)

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature, args)
        desired = builder.add(args[2], args[2].type(1))
        pair = builder.cmpxchg(pointer, args[2], desired, "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return types.boolean(counters, types.intp, types.int64), codegen
