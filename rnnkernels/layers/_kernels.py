"""The one import point for the recurrent kernels used by the layers: the
compiled :mod:`rnnkernels.ops` (docs/kernel-abi.md).  Tests may swap in
:mod:`rnnkernels.reference`, which has the same signatures."""
from ..ops import (gru_backward, gru_forward, lstm_backward, lstm_forward,  # noqa: F401
                   rnn_backward, rnn_forward)
