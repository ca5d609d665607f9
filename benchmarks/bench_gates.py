"""The seed's equations one by one, as the public array functions (``lstm_numba.gates``)."""

import numpy as np

import lstm_numba as ln

from .common import choose


class TimeGates:
    params = (choose([1, 32, 256], [1]), choose([128, 512], [16]), ["float32", "float64"])
    param_names = ["batch", "hidden", "dtype"]

    def setup(self, batch, hidden, dtype):
        rng = np.random.default_rng(0)
        self.h = rng.uniform(-1, 1, (batch, hidden)).astype(dtype)
        self.c = rng.standard_normal((batch, hidden)).astype(dtype)
        self.x = rng.standard_normal((batch, hidden)).astype(dtype)
        self.weights = ln.LSTM(hidden, hidden, dtype=dtype, seed=0).gate_weights()
        w = self.weights
        self.f = ln.forget_gate(self.h, self.x, w["W_f"], w["b_f"])  # compiles the ufuncs
        self.i = ln.input_gate(self.h, self.x, w["W_i"], w["b_i"])
        self.c_tilde = ln.candidate_memory(self.h, self.x, w["W_c"], w["b_c"])
        self.o = ln.output_gate(self.h, self.x, w["W_o"], w["b_o"])
        ln.hidden_state(self.o, ln.cell_update(self.f, self.c, self.i, self.c_tilde))

    def time_forget_gate(self, *_):
        ln.forget_gate(self.h, self.x, self.weights["W_f"], self.weights["b_f"])

    def time_input_gate(self, *_):
        ln.input_gate(self.h, self.x, self.weights["W_i"], self.weights["b_i"])

    def time_candidate_memory(self, *_):
        ln.candidate_memory(self.h, self.x, self.weights["W_c"], self.weights["b_c"])

    def time_output_gate(self, *_):
        ln.output_gate(self.h, self.x, self.weights["W_o"], self.weights["b_o"])

    def time_cell_update(self, *_):
        ln.cell_update(self.f, self.c, self.i, self.c_tilde)

    def time_hidden_state(self, *_):
        ln.hidden_state(self.o, self.c)

    def time_lstm_step(self, *_):
        ln.lstm_step(self.h, self.c, self.x, **self.weights)
