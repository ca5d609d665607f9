"""lstm_numba: fast batched LSTM inference with Numba kernels.

``LSTM`` is the model (PyTorch's weights and conventions, CPU or CUDA: ``available_devices()``);
the seed's equations are public functions on arrays (``forget_gate`` … ``lstm_step``);
``lstm_numba.reference`` is the float64 NumPy oracle.
"""

from lstm_numba.convert import (
    from_keras,
    from_keras_weights,
    from_onnx,
    from_state_dict,
    from_torch,
    to_onnx,
    to_torch,
)
from lstm_numba.cpu import forward_threads as get_num_threads
from lstm_numba.cpu import set_num_threads
from lstm_numba.dispatch import available_devices
from lstm_numba.gates import (
    candidate_memory,
    cell_update,
    forget_gate,
    hidden_state,
    input_gate,
    lstm_step,
    output_gate,
)
from lstm_numba.model import LSTM, Gates
from lstm_numba.storage import load

__all__ = [
    "Gates",
    "LSTM",
    "available_devices",
    "candidate_memory",
    "from_keras",
    "from_keras_weights",
    "from_onnx",
    "from_state_dict",
    "from_torch",
    "get_num_threads",
    "to_onnx",
    "to_torch",
    "cell_update",
    "forget_gate",
    "hidden_state",
    "input_gate",
    "load",
    "lstm_step",
    "output_gate",
    "reference",
    "set_num_threads",
]
__version__ = "0.1.0"


def __getattr__(name):
    """``lstm_numba.reference``, imported on first use (PEP 562): it loads ``scipy.special``,
    ≈ 0.3 s of a 0.8 s import, which no forward needs."""
    if name == "reference":
        import importlib

        return importlib.import_module("lstm_numba.reference")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
