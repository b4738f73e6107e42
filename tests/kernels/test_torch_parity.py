"""The kernels (reference and ops) against PyTorch's nn.LSTM / nn.GRU / nn.RNN:
outputs, final states and every gradient, including packed variable-length
batches, the reverse direction of a bidirectional module, the projection
LSTM (proj_size) and ops' PackedSequence entries."""
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
    "lstm_proj": (torch.nn.LSTM, "lstm", {"proj_size": 4}, {}),
}
T, B, I, H = 5, 4, 3, 6


def _out_size(cell):
    return CELLS[cell][2].get("proj_size", H)
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
    D, P = 2 if bidirectional else 1, _out_size(cell)
    lstm = cls is torch.nn.LSTM
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=tdtype, requires_grad=True)
    h0 = torch.tensor(rng.standard_normal((D, B, P)), dtype=tdtype, requires_grad=True)
    c0 = torch.tensor(rng.standard_normal((D, B, H)), dtype=tdtype, requires_grad=True)
    hx = (h0, c0) if lstm else h0
    if lengths is None:
        y, final = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        y, final = module(packed, hx)
        y, _ = pad_packed_sequence(y, total_length=T)   # zero-padded, original batch order
    h_n, c_n = final if lstm else (final, None)
    up = {"dy": rng.standard_normal(tuple(y.shape)), "dh_n": rng.standard_normal((D, B, P)),
          "dc_n": rng.standard_normal((D, B, H))}
    loss = (y * torch.tensor(up["dy"], dtype=tdtype)).sum() \
        + (h_n * torch.tensor(up["dh_n"], dtype=tdtype)).sum()
    if lstm:
        loss = loss + (c_n * torch.tensor(up["dc_n"], dtype=tdtype)).sum()
    loss.backward()
    numpy = lambda t: t.detach().numpy().copy()  # noqa: E731
    inputs = {"x": numpy(x), "h0": numpy(h0), "c0": numpy(c0)}
    outputs = {"y": numpy(y), "h_n": numpy(h_n), "c_n": numpy(c_n) if c_n is not None else None}
    grads = {"x": x.grad.numpy(), "h0": h0.grad.numpy(),
             **{name: p.grad.numpy() for name, p in module.named_parameters()}}
    if lstm:
        grads["c0"] = c0.grad.numpy()
    params = {name: numpy(p) for name, p in module.named_parameters()}
    return params, inputs, outputs, up, grads


def _ours(impl, cell, params, inputs, up, lengths, direction):
    """Our forward + backward for one direction (0 forward, 1 reverse) of the torch module."""
    _, prefix, _, kw = CELLS[cell]
    P = _out_size(cell)
    suffix = "_reverse" if direction else ""
    w = [params.get(f"{n}_l0{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    h0, c0 = inputs["h0"][direction], inputs["c0"][direction]
    dy = up["dy"][..., direction * P:(direction + 1) * P]
    dh_n, dc_n = up["dh_n"][direction], up["dc_n"][direction]
    common = dict(lengths=None if lengths is None else np.array(lengths), reverse=bool(direction))
    if prefix == "lstm":
        y, h_n, c_n, cache = impl.lstm_forward(inputs["x"], *w, h0=h0, c0=c0, **common,
                                               w_hr=params.get(f"weight_hr_l0{suffix}"))
        grads = impl.lstm_backward(cache, dy, dh_n, dc_n)
    else:
        y, h_n, cache = getattr(impl, f"{prefix}_forward")(inputs["x"], *w, h0=h0, **common, **kw)
        grads = getattr(impl, f"{prefix}_backward")(cache, dy, dh_n)
        c_n = None
    return {"y": y, "h_n": h_n, "c_n": c_n}, grads


def _compare(impl, cell, bias, bidirectional, lengths, dtype=np.float64, seed=0):
    params, inputs, want_out, up, want_grads = _torch_run(cell, bias, bidirectional, lengths, dtype, seed)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    dx, P = 0, _out_size(cell)
    for d in range(2 if bidirectional else 1):
        out, grads = _ours(impl, cell, params, inputs, up, lengths, d)
        suffix = "_reverse" if d else ""
        assert out["y"].dtype == dtype and grads["w_ih"].dtype == dtype
        np.testing.assert_allclose(out["y"], want_out["y"][..., d * P:(d + 1) * P], **tol, err_msg=f"y dir{d}")
        for state in ("h", "c"):
            if want_out[f"{state}_n"] is not None:
                np.testing.assert_allclose(out[f"{state}_n"], want_out[f"{state}_n"][d], **tol,
                                           err_msg=f"{state}_n dir{d}")
                np.testing.assert_allclose(grads[f"{state}0"], want_grads[f"{state}0"][d], **tol,
                                           err_msg=f"d{state}0 dir{d}")
        names = [("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")]
        if P != H:
            names.append(("w_hr", "weight_hr"))
        for ours, theirs in names:
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


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_packed_sequence_entry(cell, bidirectional, dtype):
    """ops.*_forward_packed on a PackedSequence's own data and batch_sizes (no
    unpacking): the packed outputs, final states and every gradient equal
    torch.nn's on the same PackedSequence, both directions."""
    from rnnkernels import ops
    cls, prefix, torch_kw, kw = CELLS[cell]
    tdtype, P, D = TORCH_DTYPES[dtype], _out_size(cell), 2 if bidirectional else 1
    lstm = cls is torch.nn.LSTM
    torch.manual_seed(3)
    module = cls(I, H, bidirectional=bidirectional, dtype=tdtype, **torch_kw)
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=tdtype)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    data = packed.data.detach().clone().requires_grad_(True)
    packed = torch.nn.utils.rnn.PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                                               packed.unsorted_indices)
    h0 = torch.tensor(rng.standard_normal((D, B, P)), dtype=tdtype, requires_grad=True)
    c0 = torch.tensor(rng.standard_normal((D, B, H)), dtype=tdtype, requires_grad=True)
    y, final = module(packed, (h0, c0) if lstm else h0)
    h_n, c_n = final if lstm else (final, None)
    dy = rng.standard_normal(tuple(y.data.shape))
    dh_n, dc_n = rng.standard_normal((D, B, P)), rng.standard_normal((D, B, H))
    loss = (y.data * torch.tensor(dy, dtype=tdtype)).sum() + (h_n * torch.tensor(dh_n, dtype=tdtype)).sum()
    if lstm:
        loss = loss + (c_n * torch.tensor(dc_n, dtype=tdtype)).sum()
    loss.backward()
    params = {name: p.detach().numpy() for name, p in module.named_parameters()}
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    order, unorder = packed.sorted_indices.numpy(), packed.unsorted_indices.numpy()
    batch_sizes = packed.batch_sizes.numpy()
    ddata = 0
    for d in range(D):
        sfx = "_reverse" if d else ""
        w = [params.get(f"{n}_l0{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        common = dict(h0=h0.detach().numpy()[d][order], reverse=bool(d))
        if lstm:
            out_y, out_h, out_c, cache = ops.lstm_forward_packed(
                data.detach().numpy(), batch_sizes, *w, c0=c0.detach().numpy()[d][order], **common,
                w_hr=params.get(f"weight_hr_l0{sfx}"))
            g = ops.lstm_backward(cache, dy[:, d * P:(d + 1) * P], dh_n[d][order], dc_n[d][order])
            np.testing.assert_allclose(out_c[unorder], c_n.detach().numpy()[d], **tol, err_msg="c_n")
            np.testing.assert_allclose(g["c0"][unorder], c0.grad.numpy()[d], **tol, err_msg="dc0")
        else:
            out_y, out_h, cache = getattr(ops, f"{prefix}_forward_packed")(
                data.detach().numpy(), batch_sizes, *w, **common, **kw)
            g = getattr(ops, f"{prefix}_backward")(cache, dy[:, d * P:(d + 1) * P], dh_n[d][order])
        np.testing.assert_allclose(out_y, y.data.detach().numpy()[:, d * P:(d + 1) * P], **tol, err_msg="y")
        np.testing.assert_allclose(out_h[unorder], h_n.detach().numpy()[d], **tol, err_msg="h_n")
        np.testing.assert_allclose(g["h0"][unorder], h0.grad.numpy()[d], **tol, err_msg="dh0")
        names = [("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")]
        names += [("w_hr", "weight_hr")] if P != H else []
        for ours, theirs in names:
            np.testing.assert_allclose(g[ours], dict(module.named_parameters())[f"{theirs}_l0{sfx}"].grad.numpy(),
                                       **tol, err_msg=f"{ours} dir{d}")
        ddata = ddata + g["x"]
    np.testing.assert_allclose(ddata, data.grad.numpy(), **tol, err_msg="d data")
