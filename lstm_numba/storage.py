"""Saving and loading models, configuration and weights together, never unpickling.

``.npz`` always (NumPy, ``allow_pickle=False``; the configuration is a JSON document stored as a
uint8 array under ``CONFIG_KEY``); ``.safetensors`` with the ``safetensors`` package (extra
``lstm-numba[safetensors]``; the configuration in the header's metadata). Weights use PyTorch's
names (``LSTM.state_dict``), so either file also serves ``from_state_dict`` and other tools.
A file that is truncated, corrupt, pickled, or does not describe a valid model is a
``ValueError`` naming the file (one that cannot be opened, Python's own ``OSError``); nothing is
half-loaded.
"""

import json
import os
import zipfile

import numpy as np

from lstm_numba._validation import import_optional
from lstm_numba.model import LSTM

CONFIG_KEY = "__lstm_numba_config__"
FORMAT = {"format": "lstm_numba", "version": 1}


def save(model, path):
    """Write ``model`` to ``path``, a ``.npz`` or ``.safetensors`` file name."""
    path = os.fspath(path)
    header = json.dumps({**FORMAT, "config": model.config})
    weights = model.state_dict()
    if path.lower().endswith(".safetensors"):
        safetensors_numpy = import_optional("safetensors.numpy", "safetensors")
        safetensors_numpy.save_file(weights, path, metadata={CONFIG_KEY: header})
    elif path.lower().endswith(".npz"):
        with open(path, "wb") as file:  # by name, np.savez would add ".npz" to "m.NPZ"
            np.savez(file, **weights, **{CONFIG_KEY: np.frombuffer(header.encode(), np.uint8)})
    else:
        raise ValueError(f"path: expected a name ending in .npz or .safetensors, got {path!r}")


OTHER_FORMATS = {
    ".onnx": "an ONNX model? read it with lstm_numba.from_onnx",
    ".pt": "a torch file? torch.load it, then lstm_numba.from_torch or from_state_dict",
    ".pth": "a torch file? torch.load it, then lstm_numba.from_torch or from_state_dict",
    ".h5": "a Keras file? load it with Keras, then lstm_numba.from_keras",
    ".keras": "a Keras file? load it with Keras, then lstm_numba.from_keras",
}
"""What a file named so that ``load`` cannot read probably is, and how to read it."""


def _other_format(path):
    """``"; <hint>"`` for a name of ``OTHER_FORMATS``, else ``""``."""
    hint = OTHER_FORMATS.get(os.path.splitext(path)[1].lower())
    return f"; {hint}" if hint else ""


def _read(path):
    """``(header text, weights)`` from a file written by ``save``. A file that cannot be opened
    raises Python's own ``OSError`` (``FileNotFoundError``, ``PermissionError``, ...)."""
    # opened here, closed whatever the readers raise (np.load leaves a file it opened itself
    # open where the zip cannot be read)
    with open(path, "rb") as file:
        if path.lower().endswith(".safetensors"):
            import_optional("safetensors", "safetensors")
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(path, framework="np") as tensors:
                    header = (tensors.metadata() or {}).get(CONFIG_KEY)
                    weights = {n: tensors.get_tensor(n) for n in tensors.keys()}  # noqa: SIM118
            except (OSError, SafetensorError) as error:
                raise ValueError(f"{path}: not a readable .safetensors file ({error})") from error
            return header, weights
        try:
            if not zipfile.is_zipfile(file):  # np.load would take it for a pickle and refuse it
                file.seek(0)
                if file.read(6) == b"\x93NUMPY":  # np.save's format
                    raise ValueError("a single array, not an .npz archive")
                raise ValueError("not a zip file, which an .npz archive is" + _other_format(path))
            file.seek(0)
            archive = np.load(file, allow_pickle=False)
            arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a readable .npz archive ({error})") from error
    header = arrays.pop(CONFIG_KEY, None)
    if header is not None:
        header = header.tobytes().decode("utf-8", errors="replace")
    return header, arrays


def load(path):
    """The model saved at ``path`` (by ``save`` / ``LSTM.save``), bit-identical."""
    path = os.fspath(path)
    header, weights = _read(path)
    if header is None:
        reader = (
            "safetensors.numpy.load_file(path)"
            if path.lower().endswith(".safetensors")
            else "np.load(path)"
        )
        hint = _other_format(path) or (
            f"; for bare PyTorch-named weights use lstm_numba.from_state_dict({reader}, "
            "batch_first=...)"
        )
        raise ValueError(f"{path}: no lstm_numba configuration ({CONFIG_KEY}){hint}")
    try:
        document = json.loads(header)
        if {key: document.get(key) for key in FORMAT} != FORMAT:
            raise ValueError(f"expected {FORMAT}, got format {document.get('format')!r} "
                             f"version {document.get('version')!r}")  # fmt: skip
        model = LSTM(**document["config"])
        model.load_state_dict(weights)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{path}: not a valid lstm_numba model ({error})") from error
    return model
