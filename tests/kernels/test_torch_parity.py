"""The kernels (reference and ops) against PyTorch's nn.LSTM / nn.GRU / nn.RNN:
outputs, final states and every gradient, including packed variable-length
batches and the reverse direction of a bidirectional module."""
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

# name -> (torch class, our function prefix, torch keyword arguments, our keyword arguments)
CELLS = {
    "lstm": (torch.nn.LSTM, "lstm", {}, {}),
    "gru": (torch.nn.GRU, "gru", {}, {"reset_after": True}),  # torch only has reset-after
    "rnn_tanh": (torch.nn.RNN, "rnn", {"nonlinearity": "tanh"}, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, "rnn", {"nonlinearity": "relu"}, {"nonlinearity": "relu"}),
}
T, B, I, H = 5, 4, 3, 6
LENGTHS = [3, 5, 1, 4]   # unsorted; torch cannot pack an empty sequence, so none is 0
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


@pytest.fixture(params=["reference", "ops"])
def impl(request):
    return importlib.import_module(f"rnnkernels.{request.param}")


def _torch_run(cell, bias, bidirectional, lengths, dtype, seed):
    """Build a torch module, run it on random data and backpropagate a random
    upstream gradient.  Returns (module, inputs, outputs, upstream, grads) as NumPy."""
    cls, _, torch_kw, _ = CELLS[cell]
    tdtype = TORCH_DTYPES[dtype]
    torch.manual_seed(seed)
    module = cls(I, H, bias=bias, bidirectional=bidirectional, dtype=tdtype, **torch_kw)
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=tdtype, requires_grad=True)
    h0 = torch.tensor(rng.standard_normal((D, B, H)), dtype=tdtype, requires_grad=True)
    c0 = torch.tensor(rng.standard_normal((D, B, H)), dtype=tdtype, requires_grad=True)
    hx = (h0, c0) if cell == "lstm" else h0
    if lengths is None:
        y, final = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        y, final = module(packed, hx)
        y, _ = pad_packed_sequence(y, total_length=T)   # zero-padded, original batch order
    h_n, c_n = final if cell == "lstm" else (final, None)
    up = {"dy": rng.standard_normal(tuple(y.shape)), "dh_n": rng.standard_normal((D, B, H)),
          "dc_n": rng.standard_normal((D, B, H))}
    loss = (y * torch.tensor(up["dy"], dtype=tdtype)).sum() \
        + (h_n * torch.tensor(up["dh_n"], dtype=tdtype)).sum()
    if cell == "lstm":
        loss = loss + (c_n * torch.tensor(up["dc_n"], dtype=tdtype)).sum()
    loss.backward()
    numpy = lambda t: t.detach().numpy().copy()  # noqa: E731
    inputs = {"x": numpy(x), "h0": numpy(h0), "c0": numpy(c0)}
    outputs = {"y": numpy(y), "h_n": numpy(h_n), "c_n": numpy(c_n) if c_n is not None else None}
    grads = {"x": x.grad.numpy(), "h0": h0.grad.numpy(),
             **{name: p.grad.numpy() for name, p in module.named_parameters()}}
    if cell == "lstm":
        grads["c0"] = c0.grad.numpy()
    params = {name: numpy(p) for name, p in module.named_parameters()}
    return params, inputs, outputs, up, grads


def _ours(impl, cell, params, inputs, up, lengths, direction):
    """Our forward + backward for one direction (0 forward, 1 reverse) of the torch module."""
    _, prefix, _, kw = CELLS[cell]
    suffix = "_reverse" if direction else ""
    w = [params.get(f"{n}_l0{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    h0, c0 = inputs["h0"][direction], inputs["c0"][direction]
    dy = up["dy"][..., direction * H:(direction + 1) * H]
    dh_n, dc_n = up["dh_n"][direction], up["dc_n"][direction]
    common = dict(lengths=None if lengths is None else np.array(lengths), reverse=bool(direction))
    if prefix == "lstm":
        y, h_n, c_n, cache = impl.lstm_forward(inputs["x"], *w, h0=h0, c0=c0, **common)
        grads = impl.lstm_backward(cache, dy, dh_n, dc_n)
    else:
        y, h_n, cache = getattr(impl, f"{prefix}_forward")(inputs["x"], *w, h0=h0, **common, **kw)
        grads = getattr(impl, f"{prefix}_backward")(cache, dy, dh_n)
        c_n = None
    return {"y": y, "h_n": h_n, "c_n": c_n}, grads


def _compare(impl, cell, bias, bidirectional, lengths, dtype=np.float64, seed=0):
    params, inputs, want_out, up, want_grads = _torch_run(cell, bias, bidirectional, lengths, dtype, seed)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    dx = 0
    for d in range(2 if bidirectional else 1):
        out, grads = _ours(impl, cell, params, inputs, up, lengths, d)
        suffix = "_reverse" if d else ""
        assert out["y"].dtype == dtype and grads["w_ih"].dtype == dtype
        np.testing.assert_allclose(out["y"], want_out["y"][..., d * H:(d + 1) * H], **tol, err_msg=f"y dir{d}")
        for state in ("h", "c"):
            if want_out[f"{state}_n"] is not None:
                np.testing.assert_allclose(out[f"{state}_n"], want_out[f"{state}_n"][d], **tol,
                                           err_msg=f"{state}_n dir{d}")
                np.testing.assert_allclose(grads[f"{state}0"], want_grads[f"{state}0"][d], **tol,
                                           err_msg=f"d{state}0 dir{d}")
        for ours, theirs in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                             ("b_hh", "bias_hh")):
            key = f"{theirs}_l0{suffix}"
            if key in want_grads:
                np.testing.assert_allclose(grads[ours], want_grads[key], **tol, err_msg=f"{ours} dir{d}")
            else:
                assert not bias and grads[ours] is None
        dx = dx + grads["x"]                      # both directions read x
    np.testing.assert_allclose(dx, want_grads["x"], **tol, err_msg="dx")


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["padded_full", "packed"])
def test_unidirectional(impl, cell, bias, lengths):
    _compare(impl, cell, bias, bidirectional=False, lengths=lengths)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "packed"])
def test_bidirectional_reverse_direction(impl, cell, lengths):
    """Our reverse=True run against the second half of torch's features and h_n[1]."""
    _compare(impl, cell, True, bidirectional=True, lengths=lengths, seed=1)


@pytest.mark.parametrize("cell", list(CELLS))
def test_float32(impl, cell):
    _compare(impl, cell, True, bidirectional=True, lengths=LENGTHS, dtype=np.float32, seed=2)
