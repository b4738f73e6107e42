"""The operators under torch's own checkers: torch.library.opcheck (schema,
autograd registration, fake tensors, AOT dispatch with dynamic shapes),
torch.autograd.gradcheck in float64 through the modules, the refusal of
double backward, and torch.compile / torch.export of a model using them."""
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import rnnkernels.torch as rkt  # noqa: E402
from rnnkernels.torch._ops import recurrent_backward, recurrent_forward  # noqa: E402

F64 = torch.float64
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _op_args(kind, batch_sizes, reverse, proj=0, bias=True, nonlinearity="tanh", I=4, H=3, training=True,
             dtype=F64):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype, requires_grad=True)  # noqa: E731
    N, B, G, P = sum(batch_sizes), batch_sizes[0], GATES[kind], proj or H
    return (kind, r(N, I), torch.tensor(batch_sizes), r(B, P), r(B, H) if kind == "lstm" else torch.empty(0, dtype=dtype),
            r(G * H, I), r(G * H, P), r(G * H) if bias else None, r(G * H) if bias else None,
            r(P, H) if proj else None, reverse, nonlinearity, training)


OP_CASES = [("lstm", [3, 3, 3], False, 0, True, "tanh"), ("lstm", [3, 2, 2, 1], True, 0, False, "tanh"),
            ("lstm", [3, 2, 1], False, 2, True, "tanh"), ("lstm", [2, 2], True, 2, False, "tanh"),
            ("gru", [3, 3, 3], False, 0, True, "tanh"), ("gru", [3, 2, 1], True, 0, False, "tanh"),
            ("rnn", [3, 3], False, 0, True, "tanh"), ("rnn", [3, 1, 1], True, 0, True, "relu")]


@pytest.mark.torch
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: f"{c[0]}-{c[1]}-rev{c[2]}-P{c[3]}-bias{c[4]}-{c[5]}")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_opcheck_forward_operator(case, dtype):
    kind, bs, reverse, proj, bias, nl = case
    torch.library.opcheck(recurrent_forward, _op_args(kind, bs, reverse, proj, bias, nl, dtype=dtype))


@pytest.mark.torch
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: f"{c[0]}-{c[1]}-rev{c[2]}-P{c[3]}-bias{c[4]}-{c[5]}")
def test_eager_path_equals_the_operators(case, monkeypatch):
    """Plain eager calls skip the operators' dispatch (rnnkernels.torch._ops.recurrent):
    outputs, states and every gradient are the operators' bits."""
    from rnnkernels.torch import _ops

    kind, bs, reverse, proj, bias, nl = case

    def run():
        args = _op_args(kind, bs, reverse, proj, bias, nl)
        out = _ops.recurrent(*args)
        inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        loss = (out[0] ** 2).sum() + out[1].sum() + (out[2].sum() if kind == "lstm" else 0)
        return [t.detach() for t in out[:3]] + list(torch.autograd.grad(loss, inputs))

    eager = run()
    calls = []
    monkeypatch.setattr(_ops, "recurrent_forward", lambda *a: calls.append(1) or recurrent_forward(*a))
    monkeypatch.setattr(_ops, "_plain_eager", lambda tensors: False)
    through_operators = run()
    assert calls  # the second run did go through the operator
    assert len(eager) == len(through_operators)
    for a, b in zip(eager, through_operators):
        assert torch.equal(a, b)


@pytest.mark.torch
def test_opcheck_inference_call_and_backward_operator():
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in _op_args("lstm", [3, 2], False, training=False)]
    torch.library.opcheck(recurrent_forward, tuple(args))  # inference: nothing to differentiate
    args = _op_args("gru", [3, 2, 2], True)
    out = recurrent_forward(*args)
    kind, _, bs, _, _, w_ih, w_hh, _, _, _, reverse, nl, _ = args
    dy, dh = torch.randn_like(out[0]), torch.randn_like(out[1])
    ws = [t.detach() for t in out[3:]]
    torch.library.opcheck(recurrent_backward, (kind, bs, w_ih.detach(), w_hh.detach(), None, *ws, dy, dh,
                                               torch.empty(0, dtype=F64), reverse, nl, True, True),
                          test_utils=("test_schema", "test_faketensor"))


def _gradcheck_module(module, x, states, packed_lengths=None):
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in module.named_parameters()]

    def f(x, *rest):
        st, ps = rest[:len(states)], rest[len(states):]
        inp = pack_padded_sequence(x, packed_lengths, enforce_sorted=False) if packed_lengths is not None else x
        hx = tuple(st) if len(st) == 2 else st[0]
        y, hn = torch.func.functional_call(module, dict(zip(names, ps)), (inp, hx))
        y = y.data if packed_lengths is not None else y
        hn = hn if isinstance(hn, tuple) else (hn,)
        return (y,) + hn

    return torch.autograd.gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("cls,kw", [(rkt.LSTM, {}), (rkt.LSTM, {"proj_size": 2}), (rkt.GRU, {}),
                                    (rkt.RNN, {}), (rkt.RNN, {"nonlinearity": "relu", "bias": False})],
                         ids=["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu_nobias"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_gradcheck_float64_inputs_states_and_parameters(cls, kw, packed):
    torch.manual_seed(0)
    m = cls(3, 3, num_layers=2, bidirectional=True, dtype=F64, **kw)
    P = kw.get("proj_size", 0) or 3
    x = torch.randn(4, 3, 3, dtype=F64, requires_grad=True)
    states = [torch.randn(4, 3, P, dtype=F64, requires_grad=True)]
    if cls is rkt.LSTM:
        states.append(torch.randn(4, 3, 3, dtype=F64, requires_grad=True))
    assert _gradcheck_module(m, x, states, torch.tensor([2, 4, 3]) if packed else None)


@pytest.mark.torch
def test_double_backward_is_a_clear_error():
    m = rkt.LSTM(3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    y, _ = m(x)
    (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward.*not supported"):
        gx.sum().backward()


@pytest.mark.torch
def test_a_graph_is_reusable_with_retain_graph():
    m = rkt.GRU(3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    y, _ = m(x)
    y.sum().backward(retain_graph=True)
    first = x.grad.clone()
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2 * first)


class _Classifier(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn, self.head = rnn, torch.nn.Linear(2 * rnn.hidden_size, 5)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


def _compile_works():
    try:
        torch.compile(lambda t: t * 2)(torch.ones(2))
        return True
    except Exception:  # noqa: BLE001 - no C++ compiler, unsupported Python, ...
        return False


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("cls", [rkt.LSTM, rkt.GRU])
def test_torch_compile_traces_one_graph_and_matches_eager(cls):
    if not _compile_works():
        pytest.skip("torch.compile does not work in this environment (no inductor toolchain)")
    torch.manual_seed(0)
    model = _Classifier(cls(3, 4, num_layers=2, bidirectional=True, batch_first=True))
    x = torch.randn(2, 6, 3, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: the modules trace without a break
    out_c = compiled(x)
    out_c.sum().backward()
    gc = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    model.zero_grad()
    x.grad = None
    out_e = model(x)
    out_e.sum().backward()
    ge = [p.grad for p in model.parameters()] + [x.grad]
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_torch_export_sees_the_opaque_operator():
    model = _Classifier(rkt.LSTM(3, 4, bidirectional=True, batch_first=True)).eval()
    x = torch.randn(2, 6, 3)
    ep = torch.export.export(model, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "rnnkernels.recurrent_forward.default" in targets
    torch.testing.assert_close(ep.module()(x), model(x))


@pytest.mark.torch
def test_backward_reuses_the_forward_packing_only_while_valid():
    import gc

    from rnnkernels.torch import _ops

    args = _op_args("lstm", [3, 2, 2], True, proj=2)
    kind, _, bs, _, _, w_ih, w_hh, _, _, w_hr, reverse, nl, _ = args
    out = recurrent_forward(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    ws = out[3:]
    w_ih, w_hh, w_hr = w_ih.detach(), w_hh.detach(), w_hr.detach()
    assert _ops._recall_packing(ws[1], w_ih, w_hh, w_hr) is not None
    assert _ops._recall_packing(ws[1], w_ih, w_hh.clone(), w_hr) is None  # other memory: packed again
    dy, dh, dc = torch.randn_like(out[0]), torch.randn_like(out[1]), torch.randn_like(out[2])
    def call(w, ws):
        return recurrent_backward(kind, bs, w_ih, w, w_hr, *ws, dy, dh, dc, reverse, nl, True, True)

    for a, b in zip(call(w_hh, ws), call(w_hh.clone(), ws)):
        assert torch.equal(a, b)  # the reused packing and a fresh one: the same bits
    w_hh.add_(0)  # an in-place change (its version moves): the packing is stale
    assert _ops._recall_packing(ws[1], w_ih, w_hh, w_hr) is None
    del out, ws
    gc.collect()
    assert not _ops._PACKED  # entries die with the workspace


_GC_STRESS = """
import gc, torch, rnnkernels.torch as rkt
gc.set_threshold(1, 1, 1)  # collections at nearly every allocation, weak-reference callbacks among them
m = rkt.GRU(3, 4, num_layers=2, bidirectional=True)
x = torch.randn(6, 2, 3)
for i in range(150):
    y, h = m(x)
    cycle = [y]
    cycle.append(cycle)  # cyclic garbage holding outputs: freed by the collector, not by refcounts
    if i % 2:
        y.sum().backward()
print("done")
"""


@pytest.mark.torch
def test_no_deadlock_when_the_collector_frees_workspaces_mid_call():
    import subprocess
    import sys

    from helpers.environment import package_env

    r = subprocess.run([sys.executable, "-c", _GC_STRESS], capture_output=True, text=True, timeout=300,
                       env=package_env())
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_an_in_place_change_of_the_output_keeps_the_gradients_right(cell):
    """The kernels' output is never memory their backward reads: an in-place
    change of it (which torch.nn's generic backward allows) gives torch.nn's
    gradients, not silently wrong ones."""
    import rnnkernels.torch as rkt
    torch.manual_seed(3)
    peer = getattr(torch.nn, cell)(3, 5, dtype=torch.float64)
    ours = getattr(rkt, cell)(3, 5, dtype=torch.float64)
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    grads = []
    for module in (peer, ours):
        y, _ = module(x)
        y.mul_(2)
        (y * y).sum().backward()
        grads.append([p.grad.clone() for p in module.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
