"""Argument checks for the public wrappers: every error names the argument, what was expected and
what was given, before anything reaches a compiled kernel; and the optional packages' imports,
whose error names what installs them."""

import importlib

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype):
    """The model/compute dtype as a ``np.dtype``; float32 and float64 only. None is the
    default, float32, as in PyTorch (NumPy reads ``np.dtype(None)`` as float64)."""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        dtype = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from error
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def as_array(name, value, dtype=None):
    """``value`` as a NumPy array: arrays (and tensors) keep their dtype, values without one of
    their own (nested lists, numbers) are read as ``dtype``. What NumPy cannot read (a torch
    tensor that requires grad or of a dtype NumPy lacks, a ragged list) is a ``TypeError`` naming
    ``name``."""
    if value is None:
        raise TypeError(f"{name}: expected a float32 or float64 array, got None")
    has_dtype = hasattr(value, "dtype")
    try:
        return np.asarray(value, dtype=None if has_dtype else dtype)
    except (TypeError, ValueError, RuntimeError) as error:
        kind = type(value).__name__ + (f" of dtype {value.dtype}" if has_dtype else "")
        raise TypeError(
            f"{name}: expected a float32 or float64 array; NumPy cannot read the {kind} given "
            f"({error})"
        ) from error


def as_weight_array(name, value):
    """A weight as ``as_array`` reads it, but a torch tensor detached and on the host first (a
    ``Parameter``, which requires grad; a CUDA tensor) and, in half precision (float16,
    bfloat16, which NumPy lacks), as float32: exact, as loading into a model casts anyway."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:
            value = value.float()
    return as_array(name, value)


def as_float_array(name, value, dtype=None):
    """``value`` as a NumPy array (``as_array``) of a supported float dtype, equal to ``dtype``
    when given.

    Never casts an array: a float64 array for a float32 model is an error, as in PyTorch, because
    a silent cast would hide a precision or a performance surprise.
    """
    return check_float_dtype(name, as_array(name, value, dtype), dtype, given=value)


def conversion(given, dtype):
    """How to convert ``given`` to ``dtype``, as its own library spells it: ``.to(torch.…)``
    for a torch tensor, else NumPy's (and CuPy's) ``.astype(np.…)``."""
    if type(given).__module__.startswith("torch"):
        return f".to(torch.{dtype})"
    return f".astype(np.{dtype})"


def check_float_dtype(name, array, dtype=None, given=None):
    """``array`` (NumPy or a device array: anything with a NumPy ``dtype``) unchanged, after
    checking its dtype as ``as_float_array`` does; ``given``, what the caller passed (a tensor
    read as ``array``), names the conversion the error suggests."""
    given = array if given is None else given
    if array.dtype not in SUPPORTED_DTYPES:
        native = array.dtype.newbyteorder("=")
        swapped = (
            f" ({native} in the other byte order); convert it with {conversion(given, native)}"
            if native in SUPPORTED_DTYPES
            else ""
        )
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got dtype {array.dtype}{swapped}"
        )
    if dtype is not None and array.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype}, got {array.dtype}; convert it with "
            f"{conversion(given, dtype)} or use a model of that dtype"
        )
    return array


def check_shape(name, array, expected, meaning):
    """Raise ``ValueError`` unless ``array.shape == expected``; ``meaning`` spells the axes, e.g.
    ``"(4H, I)"``."""
    expected = tuple(expected)
    if array.shape != expected:
        raise ValueError(f"{name}: expected shape {meaning} = {expected}, got {array.shape}")


def check_same_dtype(named_arrays):
    """Raise ``TypeError`` unless all arrays share one dtype; names each one's dtype."""
    dtypes = {array.dtype for array in named_arrays.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {array.dtype}" for name, array in named_arrays.items())
        raise TypeError(f"mixed dtypes; expected all float32 or all float64, got {listing}")


def check_positive_int(name, value):
    """``value`` as an int ≥ 1, or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def check_lengths(lengths, batch, steps):
    """``lengths`` as an int64 array (B,) of valid steps per sequence, each in [0, T]."""
    array = np.asarray(lengths)
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise TypeError(f"lengths: expected an integer array (B,), got dtype {array.dtype}")
    check_shape("lengths", array, (batch,), "(B,)")
    if array.size and (array.min() < 0 or array.max() > steps):  # faster than the mask
        outside = np.flatnonzero((array < 0) | (array > steps))
        first = outside[0]
        raise ValueError(
            f"lengths: expected 0 <= length <= T = {steps} for every sequence, got "
            f"lengths[{first}] = {array[first]} ({outside.size} out of range)"
        )
    return array.astype(np.int64)


def check_non_negative_int(name, value):
    """``value`` as an int ≥ 0, or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value}")
    return int(value)


def check_index(name, value, count, counted):
    """``value`` as an int in [0, count), or a ``TypeError``/``ValueError`` naming ``name`` and
    the ``count`` there are (``counted``, e.g. "num_layers")."""
    index = check_non_negative_int(name, value)
    if index >= count:
        raise ValueError(f"{name}: expected 0 <= {name} < {counted} = {count}, got {index}")
    return index


def import_optional(name, extra=None):
    """The optional package ``name`` (e.g. "onnx", "safetensors.numpy"), imported; where it is
    not installed, an ``ImportError`` naming the extra that installs it (or the package itself,
    for one no extra holds)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        package = name.partition(".")[0]
        install = package if extra is None else f"'lstm-numba[{extra}]'"
        raise ImportError(
            f"{package} is not installed; install it with pip install {install}"
        ) from error
