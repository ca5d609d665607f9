"""The model API: ``LSTM``, a PyTorch-compatible LSTM for inference, with ONNX's options."""

import itertools
import math
import re
import threading
from typing import NamedTuple

import numpy as np
from numba import config as numba_config

from lstm_numba import cpu, dispatch
from lstm_numba._validation import (
    as_float_array,
    as_weight_array,
    check_dtype,
    check_float_dtype,
    check_index,
    check_lengths,
    check_non_negative_int,
    check_positive_int,
    check_shape,
)
from lstm_numba.equations import ACTIVATIONS

GATE_ORDER = "ifgo"
"""Order of the four gate blocks in the stacked weights, as in PyTorch: input, forget, candidate
(g, the seed's C̃), output."""

DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "tanh")
"""ONNX's f (gates), g (candidate memory), h (output): the standard LSTM."""

ACTIVATION_PARAMETERS = {
    "hardsigmoid": (0.2, 0.5),
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (1.0, None),
    "elu": (1.0, None),
    "scaledtanh": (1.0, 1.0),
    "affine": (1.0, 0.0),
}
"""Activations that take alpha (and beta, when not None), with the defaults of the ONNX operators
of the same name. The others take neither."""

DIRECTION_SUFFIXES = ("", "_reverse")

PARAMETER_NAME = re.compile(
    r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|peephole)_l(\d+)(_reverse)?"
)
"""A weight's name as ``state_dict`` has it: (kind, layer, direction suffix)."""

STRUCTURE = (
    "input_size", "hidden_size", "num_layers", "bias", "bidirectional", "proj_size", "dtype",
    "reverse", "peepholes", "clip", "input_forget", "activations", "activation_alpha",
    "activation_beta",
)  # fmt: skip
"""The constructor's options that shape the weights and the compiled cell: read-only once built
(``batch_first``, read at each call, may change)."""


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` did not match, as PyTorch's result names it."""

    missing_keys: list
    """the model's weights the mapping lacks (left as they were)"""
    unexpected_keys: list
    """the mapping's keys the model has no weight of (ignored)"""


class Gates(NamedTuple):
    """Gate traces of a forward (``model(x, return_gates=True)``), each (L·D, B, T, H): the leading
    axis ordered as h_n (layer k, direction d at k·D + d), then batch row, time step (input order,
    whatever the direction) and hidden unit. NaN past each sequence's length."""

    forget: np.ndarray
    """f = σ(W_f·[h, x] + b_f)"""
    input: np.ndarray
    """i = σ(W_i·[h, x] + b_i)"""
    candidate: np.ndarray
    """C̃ = tanh(W_c·[h, x] + b_c)"""
    output: np.ndarray
    """o = σ(W_o·[h, x] + b_o)"""
    cell: np.ndarray
    """C = f ⊙ C_prev + i ⊙ C̃"""


def _finite_floats(name, values):
    """``values`` (numbers) as a list of finite floats, or an error naming ``name``."""
    try:
        floats = [float(value) for value in values]
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected a sequence of numbers, got {values!r}") from error
    if not all(map(math.isfinite, floats)):
        raise ValueError(f"{name}: expected finite numbers, got {values!r}")
    return floats


def _resolve_activations(activations, alphas, betas, directions):
    """``(names, parameters)``: 3·D lower-case ONNX names and their (alpha, beta), 3·D × 2.

    ``activations`` has 3 names (shared by the directions) or 3·D; ``alphas``/``betas`` are ONNX's
    ``activation_alpha``/``activation_beta``: consumed in order by the activations that take them,
    defaults after the list ends.
    """
    count = None if isinstance(activations, str) else getattr(activations, "__len__", None)
    if count is None or count() not in {3, 3 * directions}:
        raise ValueError(
            "activations: expected 3 names (f, g, h)"
            + (" or 6 (forward, then reverse)" if directions == 2 else "")
            + f", got {activations!r}"
        )
    names = []
    for name in activations:
        key = str(name).lower().replace("_", "")
        if key not in ACTIVATIONS:
            raise ValueError(
                f"activations: unknown activation {name!r}; expected one of "
                + ", ".join(ACTIVATIONS)
            )
        names.append(key)
    if len(names) == 3:
        names *= directions
    alphas = _finite_floats("activation_alpha", alphas)
    betas = _finite_floats("activation_beta", betas)
    parameters = []
    for name in names:
        alpha, beta = ACTIVATION_PARAMETERS.get(name, (None, None))
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        parameters.append((alpha or 0.0, beta or 0.0))
    if alphas or betas:
        raise ValueError(
            "activation_alpha/activation_beta: more values than the activations "
            f"{names} take ({len(alphas)} alpha and {len(betas)} beta left over)"
        )
    return tuple(names), parameters


class LSTM:
    """A multi-layer, optionally bidirectional LSTM with ``torch.nn.LSTM``'s weights, shapes and
    results, plus the options of the ONNX ``LSTM`` operator, on Numba kernels.

    ``LSTM(input_size, hidden_size, num_layers=1, *, bias=True, batch_first=True,
    bidirectional=False, proj_size=0, dtype=np.float32, seed=None, reverse=False, peepholes=False,
    clip=None,
    input_forget=False, activations=("sigmoid", "tanh", "tanh"), activation_alpha=(),
    activation_beta=())``.

    Weights are plain NumPy arrays under PyTorch's names, for layer k and direction suffix
    ``""`` or ``"_reverse"`` (D = 2 directions when bidirectional), H_out = proj_size or H:
    ``weight_ih_l{k}`` (4H, I) for k = 0, (4H, D·H_out) above; ``weight_hh_l{k}`` (4H, H_out);
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,) (absent when ``bias=False``); ``weight_hr_l{k}``
    (H_out, H) when ``proj_size > 0``. Gate blocks in order i, f, g, o. They start uniform in
    ±1/√H, as in PyTorch (``seed`` makes them reproducible).

    ONNX's options (``onnx/defs/rnn/defs.cc``): ``reverse`` reads the sequences backwards, one
    direction only (``direction="reverse"``; y stays in input time order); ``peepholes`` adds
    ``peephole_l{k}`` (3H,), the vectors P_i, P_o, P_f in ONNX's order; ``clip`` bounds every
    gate pre-activation to ±clip; ``input_forget`` couples the gates (f = 1 − i); ``activations``
    names ONNX's f (gates), g (candidate) and h (output), any of ``equations.ACTIVATIONS``, with
    ``activation_alpha`` and ``activation_beta`` consumed as ONNX does.

    ``y, (h_n, c_n) = model(x, hx=None, lengths=None)``; see ``__call__``.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        *,
        bias=True,
        batch_first=True,
        bidirectional=False,
        proj_size=0,
        dtype=np.float32,
        seed=None,
        reverse=False,
        peepholes=False,
        clip=None,
        input_forget=False,
        activations=DEFAULT_ACTIVATIONS,
        activation_alpha=(),
        activation_beta=(),
    ):
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.proj_size = check_non_negative_int("proj_size", proj_size)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size: expected less than hidden_size = {hidden_size}, got {proj_size}"
            )
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.reverse = bool(reverse)
        if self.reverse and self.bidirectional:
            raise ValueError("reverse: only for a unidirectional LSTM (bidirectional=False)")
        self.dtype = check_dtype(dtype)
        self.peepholes = bool(peepholes)
        if clip is not None and not (isinstance(clip, (int, float, np.number)) and clip > 0):
            raise ValueError(f"clip: expected a positive number or None, got {clip!r}")
        self.clip = None if clip is None else float(clip)
        self.input_forget = bool(input_forget)
        self.activations, parameters = _resolve_activations(
            activations, activation_alpha, activation_beta, self.num_directions
        )
        self.activation_alpha = tuple(alpha for alpha, _ in parameters)
        self.activation_beta = tuple(beta for _, beta in parameters)
        self._device_layers = None  # weights on the GPU, after to("cuda")
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"seed: expected None, a non-negative integer or a NumPy Generator, got {seed!r}"
            ) from error
        self._layers = self._allocate_layers(rng)
        self._kept_panels = None  # the weights packed once, a frozen model's (``freeze``)
        self._replays = ThreadReplays()  # the calls' kernel calls (``_replayed``)
        self._bind_views()

    def _bind_views(self):
        """The public weights and the cells' peepholes as views of the layers' stacks."""
        self._parameters = {
            name: self._layers[layer][kind][direction]
            for name, (layer, kind, direction) in self._parameter_locations().items()
        }
        self._cells = [self._make_cell(layer) for layer in range(self.num_layers)]

    def freeze(self):
        """A copy of this model whose weights cannot change, so that its CPU forwards pack them
        for the register tile once, on the first call that reads them packed, instead of on
        every call, and read them packed over any number of steps (as ONNX Runtime's session,
        or ``torch.jit.freeze``, prepack theirs): calls of a few rows over few steps, such as a
        ``Stream``'s, up to 1.5× as fast. The results agree with this model's within float32's
        rounding (the products sum in another order where the plans differ), and are the same
        from call to call. Its weights are read-only arrays: writing into one, assigning one or
        ``load_state_dict`` raises; change the model it came from and freeze that again. The
        packed copies take memory for the model's life, up to 2.5 × the weights' (a copy of
        W_hh and W_ih for each way its calls read them). A frozen model returns itself; saved
        and loaded, a model is not frozen. docs/performance.md, item 68."""
        if self.frozen:
            return self
        frozen = LSTM(**self.config)
        frozen.load_state_dict(self._parameters)
        for stacks in frozen._layers:
            for array in stacks.values():
                array.flags.writeable = False
        frozen._bind_views()  # views of the read-only stacks, read-only too
        frozen._kept_panels = {}
        if self._device_layers is not None:
            frozen.to("cuda")
        return frozen

    @property
    def frozen(self):
        """Whether the weights are read-only and packed once (``freeze``)."""
        return self._kept_panels is not None

    def __getstate__(self):
        """Pickled, or deep-copied, without a frozen model's packed weights (kept by the arrays'
        identities and addresses in this process): the copy packs its own."""
        state = self.__dict__.copy()
        if state["_kept_panels"] is not None:
            state["_kept_panels"] = {}
        return state

    def __setstate__(self, state):
        """The weights' views bound again to the layers' stacks (a view is pickled, and
        deep-copied, as an array of its own, which the forward would not read), read-only
        where the model is frozen."""
        self.__dict__.update(state)
        if self.frozen:
            for stacks in self._layers:
                for array in stacks.values():
                    array.flags.writeable = False
        self._bind_views()

    def _refuse_if_frozen(self, what, error):
        """``error`` naming ``what`` where the model is frozen."""
        if self.frozen:
            raise error(
                f"{what}: this model is frozen (model.freeze()), its weights read-only; change "
                "the model it was frozen from and freeze that again"
            )

    @property
    def config(self):
        """The constructor's arguments (all but ``seed``), JSON-friendly: ``LSTM(**config)``
        builds a model of the same structure."""
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "bidirectional": self.bidirectional,
            "proj_size": self.proj_size,
            "dtype": self.dtype.name,
            "reverse": self.reverse,
            "peepholes": self.peepholes,
            "clip": self.clip,
            "input_forget": self.input_forget,
            "activations": list(self.activations),
            "activation_alpha": [
                alpha
                for name, alpha in zip(self.activations, self.activation_alpha, strict=True)
                if ACTIVATION_PARAMETERS.get(name, (None, None))[0] is not None
            ],
            "activation_beta": [
                beta
                for name, beta in zip(self.activations, self.activation_beta, strict=True)
                if ACTIVATION_PARAMETERS.get(name, (None, None))[1] is not None
            ],
        }

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def output_size(self):
        """H_out: the size of h and of each direction's part of y."""
        return self.proj_size or self.hidden_size

    def _allocate_layers(self, rng):
        """Per layer, the weights stacked over directions, in the kernels' layout (see
        ``cpu.lstm_partitioned_forward``); bias zeros and no peepholes when unused."""
        directions, hidden, out = self.num_directions, self.hidden_size, self.output_size
        bound = 1.0 / math.sqrt(hidden)
        layers = []
        for layer in range(self.num_layers):
            inputs = self.input_size if layer == 0 else directions * out
            shapes = {
                "weight_ih": (4 * hidden, inputs),
                "weight_hh": (4 * hidden, out),
                "bias_ih": (4 * hidden,),
                "bias_hh": (4 * hidden,),
                "weight_hr": (out, hidden) if self.proj_size else (0, 0),
                "peephole": (3 * hidden,),
            }
            stacks = {}
            for kind, shape in shapes.items():
                used = self._uses(kind)
                values = rng.uniform(-bound, bound, (directions, *shape)) if used else 0.0
                stacks[kind] = np.zeros((directions, *shape), self.dtype)
                stacks[kind][...] = values
            layers.append(stacks)
        return layers

    def _uses(self, kind):
        """Whether this model has the weights of ``kind`` (a key of a layer's stacks)."""
        return {
            "bias_ih": self.bias,
            "bias_hh": self.bias,
            "weight_hr": self.proj_size > 0,
            "peephole": self.peepholes,
        }.get(kind, True)

    def _parameter_locations(self):
        """Public name → (layer, kind, direction), PyTorch's names in PyTorch's order."""
        locations = {}
        for layer in range(self.num_layers):
            for direction, suffix in enumerate(DIRECTION_SUFFIXES[: self.num_directions]):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                    if self._uses(kind):
                        locations[f"{kind}_l{layer}{suffix}"] = (layer, kind, direction)
                if self.peepholes:
                    locations[f"peephole_l{layer}{suffix}"] = (layer, "peephole", direction)
        return locations

    def _checked_parameter(self, name, value):
        """``value`` as an array of the model's dtype and ``name``'s shape (floats cast, float16
        too, as PyTorch's ``load_state_dict`` does)."""
        expected = self._parameters[name].shape
        meaning = {
            "weight_ih": "(4H, I)" if name.endswith(("l0", "l0_reverse")) else "(4H, D·H_out)",
            "weight_hh": "(4H, H_out)",
            "bias_ih": "(4H,)",
            "bias_hh": "(4H,)",
            "weight_hr": "(H_out, H)",
            "peephole": "(3H,)",
        }[name.rsplit("_l", 1)[0]]
        array = as_weight_array(name, value)
        if array.dtype == np.float16:  # exact in either dtype
            array = array.astype(self.dtype)
        check_float_dtype(name, array, given=value)
        check_shape(name, array, expected, meaning)
        return array.astype(self.dtype, copy=False)

    def __getattr__(self, name):
        parameters = self.__dict__.get("_parameters", {})
        if name in parameters:
            return parameters[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        """A weight's new value, checked and copied in; the structure is fixed once built; a
        weight's name the model lacks is an error, not an attribute the forward would ignore."""
        if name in self.__dict__.get("_parameters", {}):
            self._refuse_if_frozen(name, AttributeError)
            self._parameters[name][...] = self._checked_parameter(name, value)
            self._refresh_device_copy()
        elif name in STRUCTURE and name in self.__dict__:
            raise AttributeError(
                f"{name}: fixed when the model is built (the weights and the compiled cell "
                f"follow it); build another: LSTM(**{{**model.config, {name!r}: {value!r}}})"
            )
        elif PARAMETER_NAME.fullmatch(name):
            raise AttributeError(
                f"{name}: this model has no such weight; its weights are "
                f"{', '.join(self._parameters)}"
            )
        else:
            super().__setattr__(name, value)

    def __repr__(self):
        options = [f"num_layers={self.num_layers}"] if self.num_layers > 1 else []
        options += [f"{name}={getattr(self, name)!r}" for name in ("bias",) if not self.bias]
        options.append(f"batch_first={self.batch_first}")
        options += [
            f"{name}={getattr(self, name)!r}"
            for name in (
                "bidirectional",
                "proj_size",
                "reverse",
                "peepholes",
                "clip",
                "input_forget",
            )
            if getattr(self, name)
        ]
        if self.activations != DEFAULT_ACTIVATIONS * self.num_directions:
            options.append(f"activations={self.activations!r}")
        options.append(f"dtype={self.dtype.name}")
        return f"LSTM({self.input_size}, {self.hidden_size}, {', '.join(options)})"

    def state_dict(self):
        """Copies of the weights under PyTorch's names (``torch.nn.LSTM.load_state_dict`` takes
        them after ``torch.from_numpy``), plus ``peephole_l{k}`` when the model has peepholes."""
        return {name: value.copy() for name, value in self._parameters.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Replace every weight from a mapping with the names and layouts of ``state_dict()``,
        e.g. ``{k: v.numpy() for k, v in torch_lstm.state_dict().items()}``; with
        ``strict=False``, those of its keys the model has (missing and unexpected keys allowed).
        Returns ``(missing_keys, unexpected_keys)`` as PyTorch's does.

        Checks every key and shape first and reports all problems in one ``ValueError``; on error
        the model is unchanged.
        """
        self._refuse_if_frozen("load_state_dict", ValueError)
        missing = [name for name in self._parameters if name not in state_dict]
        unexpected = [name for name in state_dict if name not in self._parameters]
        problems = []
        if strict:
            problems += [f"missing key {name!r}" for name in missing]
            problems += [f"unexpected key {name!r}" for name in unexpected]
        loaded = {}
        for name in self._parameters.keys() & state_dict.keys():
            try:
                loaded[name] = self._checked_parameter(name, state_dict[name])
            except (TypeError, ValueError) as error:
                problems.append(str(error))
        if problems:
            raise ValueError("load_state_dict: " + "; ".join(sorted(problems)))
        for name, value in loaded.items():
            self._parameters[name][...] = value
        self._refresh_device_copy()
        return IncompatibleKeys(missing, unexpected)

    def _refresh_device_copy(self):
        if self._device_layers is not None:
            self._device_layers = self._upload_layers()

    def stream(self, batch_size, hx=None):
        """A ``Stream``: stateful inference for ``batch_size`` sequences arriving in chunks,
        from ``hx = (h0, c0)`` ((L, B, H_out), (L, B, H): e.g. the state a call on the
        sequences' beginning returned), zeros when omitted."""
        return Stream(self, batch_size, hx)

    def save(self, path):
        """Write the configuration and weights to a ``.npz`` or ``.safetensors`` file;
        ``lstm_numba.load(path)`` reads it back bit-identically (see ``lstm_numba.storage``)."""
        from lstm_numba import storage

        storage.save(self, path)

    def gate_weights(self, layer=0, direction=0):
        """One layer and direction's weights in the seed's form for ``lstm_numba.lstm_step``: per
        gate ``W_*`` (H, H_out + I) acting on ``[h, x]`` and ``b_*`` (H,) = b_ih + b_hh, for gates
        f, i, c (C̃) and o. ``layer`` in [0, num_layers), ``direction`` 0 (forward) or, with two,
        1 (reverse). ``lstm_step(h, c, x, **weights)`` is the model's step where the model is the
        seed's LSTM: no projection (``lstm_step`` takes W (H, H + I)) and none of ONNX's options
        (peepholes, clip, input_forget, other activations), which the seed's equations lack."""
        stacks = self._layers[check_index("layer", layer, self.num_layers, "num_layers")]
        direction = check_index("direction", direction, self.num_directions, "directions")
        hidden = self.hidden_size
        bias = stacks["bias_ih"][direction] + stacks["bias_hh"][direction]
        weights = {}
        for block, gate in enumerate(GATE_ORDER):
            rows = slice(block * hidden, (block + 1) * hidden)
            seed_name = "c" if gate == "g" else gate
            weights[f"W_{seed_name}"] = np.concatenate(
                [stacks["weight_hh"][direction][rows], stacks["weight_ih"][direction][rows]],
                axis=1,
            )
            weights[f"b_{seed_name}"] = bias[rows]
        return weights

    def _cell(self, layer):
        """The cell options in the GPU kernels' form, ``(onnx, kinds, params, peepholes, bound,
        input_forget)``; built once, as they are fixed at construction (the peepholes are a view
        of the live weights)."""
        return self._cells[layer]

    def _cpu_cell(self, layer):
        """The cell options as the CPU kernels take them: None for the seed's cell (a kernel
        without the ONNX cell), else ONNX's options (see ``cpu.lstm_step_pointwise``)."""
        cell = self._cells[layer]
        return cell[1:] if cell[0] else None

    def _make_cell(self, layer):
        onnx = (
            self.peepholes
            or self.clip is not None
            or self.input_forget
            or self.activations != DEFAULT_ACTIVATIONS * self.num_directions
        )
        kinds = np.array([ACTIVATIONS.index(name) for name in self.activations], np.int64)
        parameters = np.array([self.activation_alpha, self.activation_beta], self.dtype).T
        return (
            onnx,
            kinds.reshape(self.num_directions, 3),
            np.ascontiguousarray(parameters.reshape(self.num_directions, 3, 2)),
            self._layers[layer]["peephole"].reshape(self.num_directions, 3, self.hidden_size),
            self.dtype.type(np.inf if self.clip is None else self.clip),
            self.input_forget,
        )

    def to(self, device):
        """Keep the weights on ``device`` ("cuda" or "cpu") for the calls that run there, so that
        repeated GPU calls copy nothing; returns the model. Without it each GPU call copies the
        weights over. Replacing a weight (attribute, ``load_state_dict``) refreshes the copy; after
        editing a NumPy weight in place, call ``to("cuda")`` again."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        self._device_layers = None
        if device == "cuda":
            dispatch.select_device(None, "cuda")
            self._device_layers = self._upload_layers()
        return self

    def _upload_layers(self):
        from lstm_numba import gpu

        return [gpu.upload_layer(stacks, self._cell(k)) for k, stacks in enumerate(self._layers)]

    def __call__(
        self, x, hx=None, lengths=None, *, device="auto", return_gates=False, low_memory=False
    ):  # fmt: skip
        """Run the LSTM over a batch of sequences; shapes exactly as ``torch.nn.LSTM``'s.

        x: (B, T, I) if ``batch_first`` else (T, B, I), or (T, I) for one unbatched sequence.
        hx: ``(h0, c0)``, h0 (D·L, B, H_out) and c0 (D·L, B, H) (no B axis unbatched), zeros when
        omitted; L = num_layers, index ``k·D + d`` for layer k, direction d. lengths: integers (B,)
        in [0, T], the valid steps of each sequence (batched input only); None: all T.
        device: "auto" runs where x lives (NumPy: CPU; an array with
        ``__cuda_array_interface__``: GPU), "cpu", or "cuda" (NumPy in is copied over; see
        ``lstm_numba.dispatch``). return_gates: also return the ``Gates`` traces (f, i, C̃, o, C
        of every layer, direction, row, step and unit), recorded by the same kernels.
        low_memory: a stack of two directions on the CPU peaks within 1.2 × x + y + weights on
        long sequences (``cpu.LOW_MEMORY_SHARE`` of that beyond y), at a cost in time where it
        would hold more (up to half of y beyond y): smaller groups of rows, or part of the
        forward direction computed twice for a few rows (docs/index.md, "How the forward runs").
        Ignored with ``return_gates`` (the gates take 5 × y) and on the GPU.

        Returns ``y, (h_n, c_n)`` (and ``gates`` with ``return_gates``): y (B, T, D·H_out) or
        (T, B, D·H_out), the last layer's hidden states, forward then reverse on the last axis,
        zeros past each sequence's length; h_n and c_n shaped as h0 and c0, the states at each
        sequence's last valid step (the reverse direction's after reading back to step 0; h0/c0
        for a length of 0). Arrays of x's kind: NumPy for NumPy (and lists), torch tensors for
        torch tensors (CPU or CUDA), CuPy for CuPy, Numba device arrays for those.

        A torch ``PackedSequence`` x carries its lengths (``lengths`` must be None) and gives a
        ``PackedSequence`` y, h_n and c_n in the batch's own order, as ``torch.nn.LSTM`` does.
        """
        if type(x).__name__ == "PackedSequence" and hasattr(x, "batch_sizes"):
            return self._packed_call(x, hx, lengths, device, return_gates, low_memory)
        on_gpu = dispatch.select_device(x, device) == "cuda"
        given = x
        if dispatch.is_gpu_array(x):
            x = check_float_dtype("x", dispatch.to_device(x), self.dtype, given=x)
        else:
            x = as_float_array("x", x, self.dtype)
        if x.ndim not in (2, 3):
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(
                f"x: expected a 3-D array {layout} or a 2-D (T, I), got shape {x.shape}"
            )
        unbatched = x.ndim == 2
        if unbatched:
            if lengths is not None:
                raise ValueError("lengths: only for batched input; x is one unbatched sequence")
            x = x.reshape((1, *x.shape) if self.batch_first else (x.shape[0], 1, x.shape[1]))
        batch, steps = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"x: expected input size I = {self.input_size} on the last axis, got {x.shape}"
            )
        if steps == 0:
            raise ValueError(f"x: expected at least one time step, got shape {x.shape}")
        if on_gpu and isinstance(x, np.ndarray):
            x = dispatch.to_device(x)  # NumPy in, device="cuda": copied over once checked
        elif on_gpu and not x.is_c_contiguous():
            raise ValueError("x: expected a C-contiguous CUDA array (e.g. tensor.contiguous())")
        padded = lengths is not None
        if padded and dispatch.is_gpu_array(lengths):
            lengths = dispatch.to_device(lengths).copy_to_host()
        if padded:
            lengths = check_lengths(lengths, batch, steps)
        else:
            lengths = np.empty(batch, np.int64)
            lengths.fill(steps)  # twice as fast as np.full on a small call
        padded = padded and batch > 0 and int(lengths.min()) < steps
        h0, c0 = self._initial_states(hx, batch, unbatched, on_gpu)
        layers_directions = self.num_layers * self.num_directions
        traces = None
        if return_gates:
            trace_shape = (layers_directions, 5, batch, steps, self.hidden_size)
            traces = np.full(trace_shape, np.nan, self.dtype)

        if on_gpu:
            y, (h_n, c_n), traces = self._forward_cuda(x, h0, c0, lengths, traces)
        elif not padded and traces is None:  # lengths, if given, all T
            y, (h_n, c_n) = self._replayed(np.ascontiguousarray(x), h0, c0, lengths, low_memory)
        else:
            y, (h_n, c_n) = self._forward_cpu(x, h0, c0, lengths, padded, traces, low_memory)
        if on_gpu or not isinstance(given, np.ndarray):  # NumPy in and out: nothing to convert
            y, h_n, c_n = (dispatch.like_input(given, array) for array in (y, h_n, c_n))
            traces = dispatch.like_input(given, traces) if return_gates else traces
        if unbatched:
            y = y.reshape(steps, y.shape[2])
            h_n, c_n = h_n.reshape(h_n.shape[0], -1), c_n.reshape(c_n.shape[0], -1)
        if return_gates:
            traces = traces[:, :, 0] if unbatched else traces
            return y, (h_n, c_n), Gates(*(traces[:, k] for k in range(5)))
        return y, (h_n, c_n)

    def _replayed(self, x, h0, c0, lengths, low_memory):
        """``_forward_cpu`` of a C-contiguous x (every row's length T, no traces), from and
        into fresh states h0, c0: the first call of a shape (and ``low_memory``, which may
        change the plan of two directions) in this Python thread runs it and records its kernel
        calls, later ones replay them (``Replays``) on states of the replay's own, into which h0
        and c0 are copied first, and of which the results are copies."""
        replays = self._replays.here()
        key = (x.shape, low_memory)
        found = replays.get(key)
        if found is not None:
            replay, h_state, c_state = found
            h_state[...], c_state[...] = h0, c0
            return replay(x), (h_state.copy(), c_state.copy())
        y, states = replays.record(
            key, self._forward_cpu, x, h0, c0, lengths, False, None, low_memory
        )  # fmt: skip
        if replays.get(key) is not None:  # h0, c0 are the replay's now
            return y, (h0.copy(), c0.copy())
        return y, states

    def warm_up(self, *, return_gates=False):
        """Compile every CPU kernel this model's calls can take on this machine, or load it from
        Numba's cache, so that no later call compiles: in this process, and in later ones that
        share ``NUMBA_CACHE_DIR`` on the same kind of CPU (docs/index.md, "Deploying"). With
        ``return_gates``, the kernels of calls that return the gates too. Returns the number of
        kernel signatures.

        Nothing is computed: ``cpu.dry_run`` notes the kernels the forwards would call, for 1–8
        rows and 4 × a forward's threads (``lstm_numba.get_num_threads``), each over lengths of
        time growing by half up to ``cpu.plans_settled`` (and by bisection, every length between
        two that take different kernels), with every row full, or rows of falling or rising
        lengths. The thread count is the one at the call (``lstm_numba.set_num_threads``,
        ``numba.set_num_threads``; more threads may take other kernels). The GPU's kernels
        compile on the first call there.
        """
        if numba_config.DISABLE_JIT:  # the kernels are Python functions: nothing to compile
            return 0
        signatures, panels = set(), {}  # W_hh's panels, packed once (``cpu.dry_run``)
        batches = sorted({*range(1, 9), 4 * cpu.forward_threads()})
        # (traced, low_memory): the latter only changes stacks of two directions, untraced
        calls = [(False, False)] + [(True, False)] * return_gates
        if self.num_directions > 1 and self.num_layers > 1:
            calls.append((False, True))
        for traced, low_memory in calls:
            for batch, lengths in itertools.product(batches, (None, "falling", "rising")):
                signatures |= self._signatures_over_steps(
                    batch, lengths, traced, low_memory, panels
                )  # fmt: skip
        for kernel, argument_types in signatures:
            kernel.compile(argument_types)
        return len(signatures)

    def _signatures_over_steps(self, batch, lengths, traced, low_memory, panels):
        """The kernel signatures of ``warm_up``'s dry calls of ``batch`` rows over T steps (x's
        length: ``_dry_signatures``), T growing by half up to ``cpu.plans_settled``, and every T
        between two that take different kernels, found by bisection."""
        found = {}

        def signatures(steps):
            if steps not in found:
                found[steps] = self._dry_signatures(
                    batch, steps, lengths, traced, low_memory, panels
                )  # fmt: skip
            return found[steps]

        def bisect(low, high):
            if high - low > 1 and signatures(low) != signatures(high):
                middle = (low + high) // 2
                bisect(low, middle)
                bisect(middle, high)

        points = [1 if lengths is None else 2]  # rows shorter than x: at least two steps
        itemsize = self.dtype.itemsize
        while not cpu.plans_settled(batch, points[-1], self.hidden_size, self.output_size,
                                    itemsize):  # fmt: skip
            points.append(points[-1] * 3 // 2 + 1)
        for low, high in itertools.pairwise(points):
            bisect(low, high)
        return set().union(*(signatures(steps) for steps in points))

    def _dry_signatures(self, batch, steps, lengths, traced, low_memory, panels):
        """The kernel signatures a call of x (B, T, I) (or (T, B, I)) with ``batch``
        rows over ``steps`` steps would take (``cpu.dry_run``): lengths None, every row full;
        "falling", one step short and one less each row down to 1 (the kernels' row order);
        "rising", those reversed; ``traced``: returning the gates; ``low_memory`` as
        ``__call__``'s; ``panels``: ``cpu.dry_run``'s.
        Nothing is computed and no data moves (``cpu.running_dry``)."""
        x_shape = (batch, steps, self.input_size)
        x = np.empty(x_shape if self.batch_first else x_shape[1::-1] + x_shape[2:], self.dtype)
        states = self.num_layers * self.num_directions
        h = np.zeros((states, batch, self.output_size), self.dtype)
        c = np.zeros((states, batch, self.hidden_size), self.dtype)
        padded = lengths is not None
        row_lengths = np.full(batch, steps, np.int64)
        if padded:
            row_lengths = np.maximum(steps - 1 - np.arange(batch), 1)
            if lengths == "rising":
                row_lengths = row_lengths[::-1].copy()
        traces = None
        if traced:
            traces = np.empty((states, 5, batch, steps, self.hidden_size), self.dtype)
        with cpu.dry_run(panels) as run:
            self._forward_cpu(x, h, c, row_lengths, padded, traces, low_memory)
        return frozenset(run.signatures)

    def _packed_call(self, packed, hx, lengths, device, return_gates, low_memory):
        """``__call__`` on a torch ``PackedSequence``: unpacked to x and lengths (the batch's
        own order), y packed back as the input was."""
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        if lengths is not None:
            raise ValueError("lengths: a PackedSequence x carries its own; expected None")
        x, lengths = pad_packed_sequence(packed, batch_first=self.batch_first)
        results = self(x, hx, lengths, device=device, return_gates=return_gates,
                       low_memory=low_memory)  # fmt: skip
        sorted_ = packed.sorted_indices is None  # packed from rows sorted by length
        y = pack_padded_sequence(
            results[0], lengths, batch_first=self.batch_first, enforce_sorted=sorted_
        )
        return (y, *results[1:])

    def run_onnx_io(self, X, sequence_lens=None, initial_h=None, initial_c=None, *, layout=None):
        """The call of an ONNX ``LSTM`` node (``convert.from_onnx`` builds such a model): inputs and
        outputs in ONNX's shapes, of ``layout`` 0 or 1; None: 1 when ``batch_first`` else 0 (a
        model ``from_onnx`` read batch-first off a graph that transposes X for a node of layout 0,
        as torch exports, runs that node with ``layout=0``).

        X [T, B, I] (layout 0) or [B, T, I] (layout 1); sequence_lens [B] integers or None;
        initial_h, initial_c [D, B, H] (layout 0) or [B, D, H] (layout 1), zeros when omitted.
        Returns ``(Y, Y_h, Y_c)``: Y [T, D, B, H] or [B, T, D, H]; Y_h, Y_c as initial_h. A
        sequence of length 0 keeps its initial state in Y_h, Y_c (ONNX Runtime gives zeros). With
        several layers, D·num_layers replaces D in the states and Y is the last layer's.
        """
        if layout is None:
            layout = 1 if self.batch_first else 0
        elif isinstance(layout, bool) or layout not in (0, 1):
            raise ValueError(f"layout: expected 0, 1 or None, got {layout!r}")
        X = as_float_array("X", X, self.dtype)
        if X.ndim != 3:
            raise ValueError(f"X: expected [T, B, I] or, layout 1, [B, T, I]; got shape {X.shape}")
        batch = X.shape[layout ^ 1]
        states = self.num_layers * self.num_directions
        hx = None
        if initial_h is not None or initial_c is not None:
            hx = []
            for name, given, size in (
                ("initial_h", initial_h, self.output_size),
                ("initial_c", initial_c, self.hidden_size),
            ):
                expected = (batch, states, size) if layout else (states, batch, size)
                if given is None:
                    given = np.zeros(expected, self.dtype)
                given = as_float_array(name, given, self.dtype)
                meaning = "[B, D, H]" if layout else "[D, B, H]"
                check_shape(name, given, expected, meaning)
                hx.append(given.transpose(1, 0, 2) if layout else given)
        turned = layout != self.batch_first  # X in the other layout than the model's x
        y, (h_n, c_n) = self(X.transpose(1, 0, 2) if turned else X, hx, lengths=sequence_lens)
        y = y.transpose(1, 0, 2) if turned else y
        y = y.reshape(*y.shape[:2], self.num_directions, self.output_size)
        if layout:
            return y, h_n.transpose(1, 0, 2), c_n.transpose(1, 0, 2)
        return y.transpose(0, 2, 1, 3), h_n, c_n

    def _initial_states(self, hx, batch, unbatched, on_gpu):
        """Checked (h0, c0), each (D·L, B, ·): fresh NumPy arrays the CPU kernels update in
        place, or device arrays for the GPU path (which does not modify them)."""
        layers_directions = self.num_layers * self.num_directions
        h_shape = (layers_directions, batch, self.output_size)
        c_shape = (layers_directions, batch, self.hidden_size)
        if hx is None:
            states = [np.zeros(h_shape, self.dtype), np.zeros(c_shape, self.dtype)]
            return [dispatch.to_device(state) for state in states] if on_gpu else states
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError(
                f"hx: expected a pair (h0, c0), got {type(hx).__name__}"
                + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
            )
        states = []
        for given, name, shape in zip(hx, ("h0", "c0"), (h_shape, c_shape), strict=True):
            if on_gpu:
                given = check_float_dtype(
                    name, dispatch.to_device(given), self.dtype, given=given
                )  # fmt: skip
            else:
                given = as_float_array(name, given, self.dtype)
            expected = (shape[0], shape[2]) if unbatched else shape
            if given.shape != expected:  # the message only then: 0.3 µs a state
                size = "H_out" if name == "h0" else "H"
                meaning = f"(D·num_layers, {size})" if unbatched else f"(D·num_layers, B, {size})"
                check_shape(name, given, expected, meaning)
            if on_gpu and not given.is_c_contiguous():
                raise ValueError(f"{name}: expected a C-contiguous CUDA array")
            if not on_gpu:  # the kernels update a C-contiguous copy (a transposed view, e.g.
                given = np.array(given, order="C")  # run_onnx_io's layout 1, is not one)
            states.append(given.reshape(shape) if unbatched else given)
        return states

    def _forward_cpu(self, x, h_n, c_n, lengths, padded, traces, low_memory=False):
        """``_forward_stack``, with the weights packed once where the model is frozen
        (``freeze``)."""
        if self._kept_panels is None:
            return self._forward_stack(x, h_n, c_n, lengths, padded, traces, low_memory)
        with cpu.KeptPanels(self._kept_panels):
            return self._forward_stack(x, h_n, c_n, lengths, padded, traces, low_memory)

    def _forward_stack(self, x, h_n, c_n, lengths, padded, traces, low_memory=False):
        """The stack on the CPU kernels; h_n, c_n hold h0, c0 and are updated in place, and so
        is ``traces`` (L·D, 5, B, T, H), all NaN on entry, unless it is None; ``low_memory`` as
        ``__call__``'s. With lengths below T (``padded``), the rows run in ``cpu.length_order``,
        so that finished rows stop costing work: the kernels read x's rows in that order where
        they are, and y and the traces are put back in order in place; except where the hidden
        units are split (``cpu.unit_split_parts``), which reads x's rows as they are and skips
        finished rows wherever they sit, and where one thread runs the rows and their order
        would save less than it costs (``cpu.order_saves``): there they run as they come."""
        batch_axis = 0 if self.batch_first else 1
        batch = x.shape[batch_axis]
        steps = int(lengths.max()) if padded else x.shape[1 - batch_axis]  # the longest length
        if not padded or self._splits_units(lengths, steps, traces is not None):
            y = self._run_layers(x, h_n, c_n, lengths, steps, padded, traces, low_memory)
            return y, (h_n, c_n)
        inputs = self.input_size
        if self.num_layers > 1:  # the slices of the layer with the most inputs: D·H_out deeper
            inputs = max(inputs, self.num_directions * self.output_size)
        _, partitions, _ = cpu.plan_forward(
            batch, inputs, self.hidden_size, steps, self.num_directions
        )
        as_they_come = partitions == 1 and cpu.order_saves(
            lengths, inputs, self.hidden_size, self.output_size,
            self.num_layers * self.num_directions,
        ) < cpu.LENGTH_ORDER_MIN_MULTIPLY_ADDS  # fmt: skip
        if not as_they_come:
            order = cpu.length_order(lengths, partitions)
            as_they_come = np.array_equal(order, np.arange(order.size))  # in order already
        if as_they_come:
            y = self._run_layers(x, h_n, c_n, lengths, steps, True, traces, low_memory)
            return y, (h_n, c_n)
        # C-contiguous copies, as the kernels take (one compiled signature per dtype): ``take``
        # gives them in 0.3 µs, indexing the middle axis and a copy in 1.8
        h_ordered, c_ordered = h_n.take(order, axis=1), c_n.take(order, axis=1)
        # the traces, all NaN until written, are written in order and put back like y
        y = self._run_layers(
            x, h_ordered, c_ordered, lengths[order], steps, True, traces, low_memory, order
        )  # fmt: skip
        h_n[:, order], c_n[:, order] = h_ordered, c_ordered
        if cpu.running_dry():  # ``warm_up``: nothing computed, nothing to move
            return y, (h_n, c_n)
        if traces is not None:
            _move_rows_in_place(traces, order, 2)
        _move_rows_in_place(y, order, batch_axis)
        return y, (h_n, c_n)

    def _splits_units(self, lengths, steps, traced):
        """Whether the layers split the hidden units of rows of ``lengths`` (the longest
        ``steps``) read in order (in one direction: two directions in turn split them only for
        rows of one length, the reverse direction's condition, which the length order leaves in
        place)."""
        seed_cell = self._cpu_cell(0) is None and not traced and self.proj_size == 0
        parts = cpu.unit_split_parts(
            lengths, steps, self.hidden_size, self.num_directions, self.reverse, seed_cell,
            self.dtype.itemsize,
        )  # fmt: skip
        return parts > 1

    def _run_layers(self, x, h_n, c_n, lengths, steps, padded, traces, low_memory, x_rows=None):
        """y of the last layer; arguments as ``_forward_cpu``'s (rows in the kernels' order, x's
        row b at x_rows[b] (``cpu.lstm_layer_forward``), y's at b), steps the longest length.

        The layers after the first run on y in place, as their input and their output (every
        kernel reads x at a chunk of times before it writes y there), so that a stack in one
        direction holds nothing of the size of y but y; in two directions, where
        ``cpu.directions_in_place`` says so, in turn (``_run_directions_in_turn``) or in halves
        of time (``cpu.lstm_directions_in_halves``), half of y beyond y; with ``low_memory``,
        less (``_directions_in_place``)."""
        batch = x.shape[0] if self.batch_first else x.shape[1]
        directions = self.num_directions
        new_output = np.zeros if padded else np.empty
        y = new_output((*x.shape[:2], directions * self.output_size), self.dtype)
        if batch == 0:
            return y
        first_traces = None if traces is None else traces[:directions]
        self._run_layer(0, np.ascontiguousarray(x), x_rows, h_n[:directions], c_n[:directions], y,
                        lengths, steps, first_traces)  # fmt: skip
        in_place, limit = None, None
        if directions > 1:
            in_place, limit = self._directions_in_place(x, y, lengths, traces, low_memory)
        for layer in range(1, self.num_layers):
            states = slice(layer * directions, (layer + 1) * directions)
            h, c = h_n[states], c_n[states]
            layer_traces = None if traces is None else traces[states]
            if directions == 1:
                self._run_layer(layer, y, None, h, c, y, lengths, steps, layer_traces)
            elif in_place == cpu.IN_TURN:
                self._run_directions_in_turn(layer, y, h, c, lengths, padded, layer_traces, limit)
            elif in_place == cpu.IN_HALVES:
                w_ih, w_hh, w_hr, bias, cell = self._cpu_layer(layer)
                cpu.lstm_directions_in_halves(
                    y, w_ih, w_hh, w_hr, bias, cell, h, c, lengths, self.batch_first,
                    layer_traces,
                )  # fmt: skip
            elif in_place == cpu.RECOMPUTED:
                w_ih, w_hh, w_hr, bias, cell = self._cpu_layer(layer)
                cpu.lstm_directions_recomputed(
                    y, w_ih, w_hh, w_hr, bias, cell, h, c, lengths, self.batch_first, *limit
                )  # fmt: skip
            else:
                layer_input = y  # the layer below's output; the one before it is freed
                y = new_output(y.shape, self.dtype)
                self._run_layer(layer, layer_input, None, h, c, y, lengths, steps, layer_traces)
        return y

    def _directions_in_place(self, x, y, lengths, traces, low_memory):
        """How the layers of two directions after the first run on their input y in place, and
        with what limit: ``cpu.directions_in_place``'s ``cpu.IN_TURN`` (the most rows a group,
        or None: ``cpu.in_turn_groups``) or ``cpu.IN_HALVES`` (None), or None (None). With
        ``low_memory`` (not for ``traces``), in place at any size, within ``cpu.LOW_MEMORY_SHARE``
        of x + y + weights beyond y, workspaces included: in turn in groups of fewer rows
        (``cpu.in_turn_group_bytes``); in halves of time where half of y fits; else, and where
        groups would keep fewer than ``cpu.LOW_MEMORY_GROUP_MIN_ROWS``, ``cpu.RECOMPUTED``
        (``cpu.recompute_plan``'s pending steps and window, ``cpu.lstm_directions_recomputed``)."""
        if self.num_layers == 1:
            return None, None
        seed_cell = self.proj_size == 0 and traces is None and self._cpu_cell(0) is None
        steps = y.shape[1 if self.batch_first else 0]
        low_memory = low_memory and traces is None
        w_hh = self._layers[1]["weight_hh"]
        in_place = cpu.directions_in_place(w_hh, lengths, steps, seed_cell, low_memory)
        if not low_memory or in_place is None:
            return in_place, None
        weights = sum(array.nbytes for stacks in self._layers for array in stacks.values())
        sizes = (x.nbytes + y.nbytes + weights, lengths.size, steps, y.shape[2], self.hidden_size,
                 self.output_size, self.dtype.itemsize)  # fmt: skip
        row_bytes = steps * self.output_size * self.dtype.itemsize  # a row's forward output
        if in_place == cpu.IN_TURN:  # the fewest groups whose largest fits
            budget = cpu.LOW_MEMORY_SHARE * sizes[0]
            groups = cpu.in_turn_groups(lengths.size, False)
            while (rows := -(-lengths.size // groups)) >= cpu.LOW_MEMORY_GROUP_MIN_ROWS:
                if cpu.in_turn_group_bytes(rows, *sizes[2:]) <= budget:
                    return in_place, rows
                groups += 1
        half_fits = lengths.size * row_bytes <= cpu.low_memory_budget(*sizes, 2)
        if in_place == cpu.IN_HALVES and half_fits:
            return in_place, None
        budget = cpu.low_memory_budget(*sizes, 0)  # the plan counts its own workspaces
        return cpu.RECOMPUTED, cpu.recompute_plan(budget, lengths, *sizes[2:])

    def _cpu_layer(self, layer):
        """Layer ``layer``'s arrays as the CPU kernels take them, every direction's: w_ih
        (D, 4H, I), w_hh (D, 4H, H_out), w_hr (D, H_out, H) or None without LSTMP's projection,
        the bias b_ih + b_hh (D, 4H), and the cell options (``_cpu_cell``)."""
        stacks = self._layers[layer]
        bias = stacks["bias_ih"] + stacks["bias_hh"]
        cpu.note_refresh(np.add, stacks["bias_ih"], stacks["bias_hh"], bias)  # for a replay
        return (
            stacks["weight_ih"],
            stacks["weight_hh"],
            stacks["weight_hr"] if self.proj_size else None,
            bias,
            self._cpu_cell(layer),
        )

    def _run_layer(
        self, layer, x, x_rows, h, c, y, lengths, steps, traces, direction=None, y_first_row=0
    ):  # fmt: skip
        """Layer ``layer`` on the CPU kernels (``cpu.lstm_layer_forward``): all its directions,
        or only ``direction`` (0 or 1), written to y's columns from its own on and y's rows from
        ``y_first_row`` on; h, c and traces those directions'."""
        w_ih, w_hh, w_hr, bias, cell = self._cpu_layer(layer)
        backward, column = self.reverse, 0
        if direction is not None:
            d = slice(direction, direction + 1)
            w_ih, w_hh, w_hr, bias = w_ih[d], w_hh[d], cpu.direction_of(w_hr, d), bias[d]
            if cell is not None:  # (kinds, params, peepholes, bound, input_forget)
                cell = (cell[0][d], cell[1][d], cell[2][d], *cell[3:])
            backward, column = direction == 1, direction * self.output_size
        cpu.lstm_layer_forward(
            x, w_ih, w_hh, w_hr, bias, cell, h, c, y, lengths, steps, backward, self.batch_first,
            traces, x_rows=x_rows, column=column, y_first_row=y_first_row,
        )  # fmt: skip

    def _run_directions_in_turn(self, layer, y, h, c, lengths, padded, traces, most_rows=None):
        """A layer of two directions after the first, on the layer below's output y in place,
        in groups of rows one after another (``cpu.in_turn_groups``), each read from y where
        its rows are: the forward direction into an array of the group's half of y, then the
        reverse one on y in place (it reads each time step's input before it writes its output
        there, and the forward direction is done with it), then the forward output copied into
        y. Side by side, the forward direction would overwrite inputs the reverse one has yet to
        read, and the layer below's output would have to be kept whole, y's size instead of half
        a group's. h, c, traces: the layer's (2, ...); most_rows: at most this many rows a group.
        """
        batch, width = lengths.size, self.output_size
        groups = cpu.in_turn_groups(batch, traces is not None, most_rows)
        most = -(-batch // groups)  # rows in the largest group
        time_steps = y.shape[1 if self.batch_first else 0]
        waiting = np.zeros(most * time_steps * width, self.dtype)  # zeros past rows' lengths
        cpu.note_moved()  # the forward output copied into y
        for group in range(groups):
            rows = slice(group * batch // groups, (group + 1) * batch // groups)
            size, group_lengths = rows.stop - rows.start, lengths[rows]
            shape = (size, time_steps, width) if self.batch_first else (time_steps, size, width)
            forward_y = waiting[: size * time_steps * width].reshape(shape)
            if padded and group and not cpu.running_dry():
                forward_y.fill(0)  # the group before's outputs past these rows' lengths
            x_rows = None if groups == 1 else np.arange(rows.start, rows.stop)
            for d, (output, first_row) in enumerate(((forward_y, 0), (y, rows.start))):
                self._run_layer(
                    layer, y, x_rows, h[d : d + 1, rows], c[d : d + 1, rows], output,
                    group_lengths, int(group_lengths.max()),
                    None if traces is None else traces[d : d + 1], d, first_row,
                )  # fmt: skip
            if not cpu.running_dry():
                group_y = y[rows] if self.batch_first else y[:, rows]
                group_y[..., :width] = forward_y

    def _forward_cuda(self, x, h0, c0, lengths, traces):
        """The stack on the GPU kernels (``gpu.lstm_forward``); device arrays in and out, the
        traces (as ``_forward_cpu``'s) copied over and returned on the device."""
        from numba import cuda

        from lstm_numba import gpu

        if traces is None:  # the GPU kernel tests the trace's size, uniformly across threads
            traces = np.empty((h0.shape[0], 0, 0, 0, 0), self.dtype)
        traces = cuda.to_device(traces)
        if lengths.size == 0:
            y_shape = (*x.shape[:2], self.num_directions * self.output_size)
            empty = (cuda.device_array(shape, self.dtype) for shape in (h0.shape, c0.shape))
            return cuda.device_array(y_shape, self.dtype), tuple(empty), traces
        layers = self._device_layers or self._upload_layers()
        steps = int(lengths.max())
        y, states = gpu.lstm_forward(
            layers, x, h0, c0, cuda.to_device(lengths), steps, self.reverse, self.batch_first,
            traces,
        )  # fmt: skip
        return y, states, traces


MOVE_ROWS_CHUNK_BYTES = 1 << 20
"""Bytes of a row that ``_move_rows_in_place`` moves at a time: its copy beside the array (and
NumPy's, where it copies a row's chunk before assigning it to another row of the same array)."""


def _move_rows_in_place(array, order, axis):
    """Row k of ``array`` along ``axis`` moved to row order[k], for the permutation ``order``,
    along each of its cycles, a chunk of time steps (each row's second-to-last axis: y's T, the
    traces' T) at a time, with a copy of one chunk beside the array (``MOVE_ROWS_CHUNK_BYTES``;
    a whole row is 1/B of y: 8 MB at (5, 4000, 512), which NumPy's copy doubled). An array of
    at most that size moves in one copy of it instead (≈ 3 µs against ≈ 25 along the cycles at
    (4, 16, 32), docs/performance.md, item 71)."""
    rows = array.swapaxes(0, axis)  # a view, the rows first and T still second to last
    source = np.empty_like(order)
    source[order] = np.arange(order.size)  # row p receives row source[p]
    if array.nbytes <= MOVE_ROWS_CHUNK_BYTES:
        rows[...] = rows[source]  # indexing copies first
        return
    done = source == np.arange(order.size)
    cycles = []
    for start in np.flatnonzero(~done):
        if done[start]:
            continue
        cycle, position = [start], source[start]
        while position != start:
            cycle.append(position)
            position = source[position]
        done[cycle] = True
        cycles.append(cycle)
    steps = rows.shape[-2]
    chunk = max(1, steps * MOVE_ROWS_CHUNK_BYTES // max(rows[0].nbytes, 1))
    for first in range(0, steps, chunk):
        window = rows[..., first : first + chunk, :]
        for cycle in cycles:
            held = window[cycle[0]].copy()
            for target, origin in itertools.pairwise(cycle):
                window[target] = window[origin]
            window[cycle[-1]] = held


MOST_REPLAYS = 16
"""The most input shapes a ``Replays`` records (a ``Stream``'s, a model's in each Python thread);
inputs of other shapes run the forward as ever."""


class Replays:
    """The recorded forwards (``cpu.Replay``) of a ``Stream``, or of a model's calls in one Python
    thread (``ThreadReplays``), by key (the input's shape, and ``cpu.thread_settings``; a model's
    calls, ``low_memory`` too): the first call of a key runs the forward and records its kernel
    calls (``record``), later ones replay them, where the forward is all replayable calls (on the
    threads or not, rows or units split, W_hh not packed for the call: a frozen model's kept, or
    packed by the units split's kernel). The weights change only in place, the kernels read them
    where they are, and the bias sum is added again each replay: a replayed call sees weights
    changed since as a planned one does. A replay keeps its recording's plan: BLAS's threads limited
    since by other means than ``set_num_threads`` (threadpoolctl) would plan another, of the same
    results."""

    def __init__(self):
        self._entries = {}

    def get(self, key):
        """The entry recorded for ``key`` (a ``cpu.Replay``, with the states it runs on for a
        model's calls), or None."""
        return self._entries.get((key, cpu.thread_settings())) or None

    def record(self, key, forward, x, *arguments):
        """``forward(x, *arguments)``, recorded for ``key`` unless the key was tried before or
        the ``MOST_REPLAYS`` are taken; its ``(y, states)`` (y with the states it returns). Where
        the forward packed the panels that later calls find kept, the next call records."""
        key = (key, cpu.thread_settings())
        if key in self._entries or len(self._entries) >= MOST_REPLAYS:
            return forward(x, *arguments)
        with cpu.recording() as taping:
            y, states = forward(x, *arguments)
        if taping.settled:
            replay = cpu.Replay.of(taping, x, y)
            self._entries[key] = None if replay is None else (replay, *states)
        return y, states

    def __getstate__(self):
        """Pickled, or deep-copied, empty: the recorded arguments are views of the states and
        weights of their stream or model, which a copy would make arrays of their own."""
        return {}

    def __setstate__(self, state):
        self.__init__()


class ThreadReplays:
    """A model's ``Replays`` in each Python thread (``here``): each thread replays on states and
    workspaces of its own. Pickled, or deep-copied, empty, as ``Replays`` are."""

    def __init__(self):
        self._threads = threading.local()

    def here(self):
        """This Python thread's ``Replays``."""
        mine = getattr(self._threads, "replays", None)
        if mine is None:
            mine = self._threads.replays = Replays()
        return mine

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()


class Stream:
    """Stateful inference over sequences that arrive in chunks (``model.stream(batch_size)``).

    ``stream.step(chunk)`` runs the next (B, t, I) chunk (time-major when the model is not
    ``batch_first``) from the state the previous chunk left and returns its y; chunked calls equal
    one call on the concatenated sequence (``lengths``: each row's own steps of a chunk).
    ``model.stream(batch_size, hx)`` starts from ``hx = (h0, c0)``, ``stream.reset(rows=None)``
    restarts some sequences (all by default) from zero states; ``stream.state`` is a copy of
    ``(h, c)``. Forward models only: a reverse direction would need the end of the sequence first.
    A stream replays the kernel calls of the first chunk of each shape on the later ones
    (``Replays``).
    """

    def __init__(self, model, batch_size, hx=None):
        if model.bidirectional or model.reverse:
            raise ValueError(
                "stream: a bidirectional or reverse LSTM needs the whole sequence before its "
                "first output; streaming is for forward models"
            )
        self.model = model
        self.batch_size = check_positive_int("batch_size", batch_size)
        self._h, self._c = model._initial_states(hx, self.batch_size, False, False)  # copies
        self._lengths = np.zeros(self.batch_size, np.int64)  # every row's steps in a chunk
        self._replays = Replays()  # the forwards' calls, by chunk shape (``_replayed``)

    @property
    def state(self):
        """Copies of the current ``(h, c)``: (L, B, H_out) and (L, B, H)."""
        return self._h.copy(), self._c.copy()

    def __repr__(self):
        return f"Stream({self.model!r}, batch_size={self.batch_size})"

    def reset(self, rows=None):
        """Zero the states of batch ``rows``: indices, or a boolean mask (B,) such as the rows
        whose sequences ended; all rows when None."""
        if rows is None:
            rows = np.arange(self.batch_size)
        rows = np.atleast_1d(np.asarray(rows))
        if rows.dtype == bool and rows.shape == (self.batch_size,):
            rows = np.flatnonzero(rows)
        if rows.dtype.kind not in "iu" or rows.ndim != 1:
            raise TypeError(
                f"rows: expected integer row indices or a boolean mask of shape (B,) = "
                f"({self.batch_size},), got {rows!r}"
            )
        outside = rows[(rows < 0) | (rows >= self.batch_size)]
        if outside.size:
            raise ValueError(
                f"rows: expected indices in [0, {self.batch_size}) (batch_size), got {outside}"
            )
        self._h[:, rows] = 0
        self._c[:, rows] = 0

    def step(self, chunk, lengths=None, *, return_gates=False):
        """The next chunk's y, (B, t, H_out) or (t, B, H_out), an array of the chunk's kind (as
        ``LSTM.__call__``'s); with ``return_gates``, ``(y, gates)``. The state moves on to the
        chunk's last step, or with ``lengths`` (B,) integers in [0, t], each row's to its own
        last one (the first lengths[b] steps of row b; y is zero after them): rows whose data
        arrive at different rates, a row of length 0 keeping its state. One step may come as
        (B, I), as ``torch.nn.LSTMCell`` takes it: y is then (B, H_out), the gates (L, B, H)."""
        shape = getattr(chunk, "shape", None) or np.shape(chunk)
        if len(shape) != 2:
            return self._step(chunk, lengths, return_gates)
        shape, expected = tuple(shape), (self.batch_size, self.model.input_size)
        if shape != expected:
            layout = "(B, t, I)" if self.model.batch_first else "(t, B, I)"
            raise ValueError(
                f"chunk: expected one step (B, I) = {expected}, or {layout}; got shape {shape}"
            )
        if not hasattr(chunk, "reshape"):  # a list: read in the model's dtype, as a call does
            chunk = as_float_array("chunk", chunk, self.model.dtype)
        rows, inputs = shape
        one_step = (rows, 1, inputs) if self.model.batch_first else (1, rows, inputs)
        results = self._step(chunk.reshape(one_step), lengths, return_gates)
        if not return_gates:
            return results.reshape(rows, -1)
        y, gates = results
        return y.reshape(rows, -1), Gates(*(trace[:, :, 0] for trace in gates))

    def _step(self, chunk, lengths, return_gates):
        """``step`` of a chunk (B, t, I), or (t, B, I) for a time-major model."""
        model = self.model
        on_gpu = dispatch.is_gpu_array(chunk)
        given = chunk
        if not on_gpu:
            chunk = as_float_array("chunk", chunk, model.dtype)
            layout = "(B, t, I)" if model.batch_first else "(t, B, I)"
            batch_axis = 0 if model.batch_first else 1
            if chunk.ndim != 3 or chunk.shape[batch_axis] != self.batch_size:
                raise ValueError(
                    f"chunk: expected {layout} with B = {self.batch_size} (or one step, (B, I)), "
                    f"got shape {chunk.shape}"
                )
            if chunk.shape[2] != model.input_size or chunk.shape[1 - batch_axis] == 0:
                raise ValueError(
                    f"chunk: expected {layout} with I = {model.input_size} and t >= 1, got shape "
                    f"{chunk.shape}"
                )
        if return_gates or on_gpu or lengths is not None:
            results = model(given, (self._h, self._c), lengths, return_gates=return_gates)
            y, (h_n, c_n) = results[:2]
            self._h[...], self._c[...] = dispatch.to_host(h_n), dispatch.to_host(c_n)
            return (y, results[2]) if return_gates else y
        steps = chunk.shape[1 - batch_axis]
        if self._lengths[0] != steps:  # the kernels only read it: kept while chunks keep a size
            self._lengths = np.full(self.batch_size, steps, np.int64)
        return dispatch.like_input(given, self._replayed(np.ascontiguousarray(chunk)))

    def _replayed(self, chunk):
        """y of a C-contiguous chunk, its calls replayed where recorded (``Replays``)."""
        found = self._replays.get(chunk.shape)
        if found is not None:
            return found[0](chunk)
        forward = self.model._forward_cpu
        y, _ = self._replays.record(chunk.shape, forward, chunk, self._h, self._c, self._lengths,
                                    False, None)  # fmt: skip
        return y
