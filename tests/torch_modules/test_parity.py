"""rnnkernels.torch's modules against torch.nn's in float64, every combination
of cell x layers x bidirectional x batch_first x padded/packed x proj_size x
bias: outputs, final states and every gradient (input, h0/c0, all parameters)
to rtol 1e-8."""
import itertools

import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import rnnkernels.torch as rkt  # noqa: E402

T, B, I, H, PROJ = 5, 3, 4, 7, 3
LENGTHS = [4, 5, 2]  # unsorted: the PackedSequence carries sorted/unsorted indices
RTOL, ATOL = 1e-8, 1e-12
CELLS = {"lstm": (torch.nn.LSTM, rkt.LSTM, {}), "gru": (torch.nn.GRU, rkt.GRU, {}),
         "rnn_tanh": (torch.nn.RNN, rkt.RNN, {"nonlinearity": "tanh"}),
         "rnn_relu": (torch.nn.RNN, rkt.RNN, {"nonlinearity": "relu"})}


def _case_list():
    for cell, layers, bidi, batch_first, packed, bias in itertools.product(
            CELLS, (1, 2), (False, True), (False, True), (False, True), (True, False)):
        for proj in ((0, PROJ) if cell == "lstm" else (0,)):
            if cell == "rnn_relu" and (layers, batch_first) != (2, False):
                continue  # relu: the nonlinearity alone differs; a subset of the grid suffices
            yield pytest.param(cell, layers, bidi, batch_first, packed, proj, bias,
                               id=f"{cell}-L{layers}-{'bi' if bidi else 'uni'}-{'bf' if batch_first else 'tm'}"
                                  f"-{'packed' if packed else 'padded'}-P{proj}-{'bias' if bias else 'nobias'}")


_cases = list(_case_list())


def _run(module, cell, x, lengths, batch_first, h0, c0, packed):
    """Forward and backward of a random linear functional of every output;
    returns the outputs and the gradients, as float64 tensors."""
    x = x.detach().clone().requires_grad_(True)
    h0 = h0.detach().clone().requires_grad_(True)
    c0 = c0.detach().clone().requires_grad_(True) if c0 is not None else None
    inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False) if packed else x
    hx = (h0, c0) if c0 is not None else h0
    y, hn = module(inp, hx)
    if packed:
        assert isinstance(y, PackedSequence)
        y = y.data
    states = list(hn) if isinstance(hn, tuple) else [hn]
    g = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for s in states:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    loss.backward()
    grads = {"x": x.grad, "h0": h0.grad}
    if c0 is not None:
        grads["c0"] = c0.grad
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return [y] + states, grads


@pytest.mark.torch
@pytest.mark.parametrize("cell,layers,bidi,batch_first,packed,proj,bias", _cases)
def test_outputs_states_and_every_gradient_match_torch_nn(cell, layers, bidi, batch_first, packed, proj, bias):
    ref_cls, our_cls, kw = CELLS[cell]
    if proj:
        kw = dict(kw, proj_size=proj)
    args = dict(num_layers=layers, bidirectional=bidi, batch_first=batch_first, bias=bias, dtype=torch.float64, **kw)
    torch.manual_seed(0)
    ref = ref_cls(I, H, **args)
    ours = our_cls(I, H, **args)
    ours.load_state_dict(ref.state_dict())
    D = 2 if bidi else 1
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=gen, dtype=torch.float64)
    h0 = torch.randn(layers * D, B, proj or H, generator=gen, dtype=torch.float64)
    c0 = torch.randn(layers * D, B, H, generator=gen, dtype=torch.float64) if cell == "lstm" else None
    lengths = torch.tensor(LENGTHS)
    out_ref, g_ref = _run(ref, cell, x, lengths, batch_first, h0, c0, packed)
    out_our, g_our = _run(ours, cell, x, lengths, batch_first, h0, c0, packed)
    for a, b in zip(out_ref, out_our):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL)
    assert set(g_ref) == set(g_our)
    for name in g_ref:
        assert g_our[name] is not None, name
        torch.testing.assert_close(g_our[name], g_ref[name], rtol=RTOL, atol=ATOL, msg=lambda m: f"{name}: {m}")
