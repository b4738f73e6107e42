"""The cell table: every recurrent cell the package computes, one row each.

The Python layers iterate this table (ops' cell functions, the Keras-style
layers' gate orders, the PyTorch interop's module names, the benchmark's
cells, the command line's --cell choices, the tests' tables); the compiled
kernels have their own table of point updates (src/_cells.h), whose rows the
``kernel_cell`` of a call names.

Adding a cell: one pair of point functions in src/_cells_t.h and its row of
RK_CELLS in src/_cells.h; its row here (and in KERNEL_CELLS); its readable
twin in rnnkernels/reference.py; its row of the tests' table
(tests/helpers/cells.py).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    kind: str                 # the ops functions' prefix: ops.{kind}_forward, ...
    gates: int                # G: w_ih is (G*H, I)
    gate_names: tuple         # PyTorch's gate order
    states: tuple             # the states, h first
    cli_name: str             # rnnkernels train --cell
    torch_module: str         # torch.nn's class of the same equations
    keras_layer: str          # keras.layers' class (and ours in rnnkernels.layers)
    keras_from_internal: tuple  # internal gate block k comes from Keras's block keras_from_internal[k]
    variants: tuple           # the ops keyword arguments of its variants


CELLS = {
    "lstm": Cell("lstm", 4, ("i", "f", "g", "o"), ("h", "c"), "lstm", "LSTM", "LSTM", (0, 1, 2, 3),
                 ("w_hr", "peephole", "layer_norm", "recurrent_mask", "zoneout")),
    "gru": Cell("gru", 3, ("r", "z", "n"), ("h",), "gru", "GRU", "GRU", (1, 0, 2),
                ("layer_norm", "recurrent_mask", "zoneout")),
    "rnn": Cell("rnn", 1, ("h",), ("h",), "rnn", "RNN", "SimpleRNN", (0,), ("recurrent_mask",)),
}

# The compiled kernels' cells, in src/_cells.h's RK_CELLS order (checked
# against the compiled table by tests/kernels/test_cells.py).
KERNEL_CELLS = ("lstm", "lstm_peephole", "gru", "gru_reset_before", "rnn_tanh", "rnn_relu",
                "lstm_layer_norm", "gru_layer_norm")
ROW_SPLIT = frozenset({"lstm_layer_norm", "gru_layer_norm"})   # run on the batch-row split


def kernel_cell(kind, peephole=False, layer_norm=False, reset_after=True, nonlinearity="tanh"):
    """The compiled kernel cell (its name) of one call's options."""
    if kind == "lstm":
        return "lstm_layer_norm" if layer_norm else "lstm_peephole" if peephole else "lstm"
    if kind == "gru":
        return "gru_layer_norm" if layer_norm else "gru" if reset_after else "gru_reset_before"
    return f"rnn_{nonlinearity}"


def kernel_index(name):
    return KERNEL_CELLS.index(name)


# Variants that cannot be combined (any other pair can): a clear error names the pair.
COMPATIBLE = frozenset({frozenset({"w_hr", "peephole"}), frozenset({"w_hr", "recurrent_mask"}),
                        frozenset({"peephole", "recurrent_mask"}), frozenset({"zoneout", "recurrent_mask"})})
