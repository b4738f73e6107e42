"""rnnkernels.torch's modules as torch.nn's: constructor, parameters,
state_dicts both ways, unbatched inputs, default states, dropout, convert,
other devices and dtypes, and the zero-copy hand-over to the kernels."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import rnnkernels.torch as rkt  # noqa: E402
from rnnkernels import ops  # noqa: E402

PAIRS = [(torch.nn.LSTM, rkt.LSTM), (torch.nn.GRU, rkt.GRU), (torch.nn.RNN, rkt.RNN)]
IDS = ["lstm", "gru", "rnn"]
F64 = torch.float64


def _pair(ref_cls, our_cls, *args, **kw):
    torch.manual_seed(0)
    ref = ref_cls(*args, **kw)
    ours = our_cls(*args, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _close(a, b):
    if isinstance(a, PackedSequence):
        assert isinstance(b, PackedSequence)
        for u, v in zip(a, b):
            if u is None:
                assert v is None
            else:
                _close(u, v)
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for u, v in zip(a, b):
            _close(u, v)
    else:
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------ construction
@pytest.mark.parametrize("ref_cls,our_cls", PAIRS, ids=IDS)
@pytest.mark.parametrize("kw", [{}, dict(num_layers=3, bias=False, batch_first=True, dropout=0.25,
                                         bidirectional=True)], ids=["defaults", "options"])
def test_same_attributes_parameters_and_initialisation_as_torch_nn(ref_cls, our_cls, kw):
    torch.manual_seed(3)
    ref = ref_cls(5, 6, **kw)
    torch.manual_seed(3)
    ours = our_cls(5, 6, **kw)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size", "mode"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    for (_, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q)  # torch.nn's own initialisation, same random draws
    assert repr(ours) == repr(ref)
    assert isinstance(ours, torch.nn.RNNBase)


def test_positional_arguments_and_the_rnn_nonlinearity_follow_torch_nn():
    ours, ref = rkt.RNN(4, 5, 2, "relu", False), torch.nn.RNN(4, 5, 2, "relu", False)
    assert (ours.nonlinearity, ours.num_layers, ours.bias) == (ref.nonlinearity, 2, False)
    with pytest.raises(ValueError, match="Unknown nonlinearity 'gelu'"):
        rkt.RNN(4, 5, nonlinearity="gelu")
    for cls in (rkt.GRU, rkt.RNN):
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
            cls(4, 5, proj_size=2)
    assert rkt.LSTM(4, 5, proj_size=2).weight_hr_l0.shape == (2, 5)
    assert rkt.LSTM(4, 5, device="cpu", dtype=F64).weight_ih_l0.dtype == F64


@pytest.mark.parametrize("ref_cls,our_cls", PAIRS, ids=IDS)
def test_state_dicts_load_both_ways(ref_cls, our_cls):
    kw = dict(num_layers=2, bidirectional=True, dtype=F64, **({"proj_size": 3} if ref_cls is torch.nn.LSTM else {}))
    ref, ours = ref_cls(4, 5, **kw), our_cls(4, 5, **kw)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2, 4, dtype=F64)
    _close(ref(x), ours(x))
    torch.manual_seed(9)
    ours2 = our_cls(4, 5, **kw)
    ref.load_state_dict(ours2.state_dict())
    _close(ref(x), ours2(x))
    assert list(ours.state_dict()) == list(ref.state_dict())


# ------------------------------------------------------------------ inputs
@pytest.mark.parametrize("ref_cls,our_cls", PAIRS, ids=IDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_with_and_without_states(ref_cls, our_cls, batch_first):
    ref, ours = _pair(ref_cls, our_cls, 4, 5, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=F64)
    x = torch.randn(6, 4, dtype=F64)
    _close(ref(x), ours(x))
    h0 = torch.randn(4, 5, dtype=F64)
    hx = (h0, torch.randn(4, 5, dtype=F64)) if ref_cls is torch.nn.LSTM else h0
    _close(ref(x, hx), ours(x, hx))


@pytest.mark.parametrize("ref_cls,our_cls", PAIRS, ids=IDS)
def test_default_states_padded_and_packed(ref_cls, our_cls):
    ref, ours = _pair(ref_cls, our_cls, 4, 5, num_layers=2, bidirectional=True, dtype=F64)
    x = torch.randn(7, 3, 4, dtype=F64)
    _close(ref(x), ours(x))
    p = pack_padded_sequence(x, torch.tensor([3, 7, 5]), enforce_sorted=False)
    _close(ref(p), ours(p))


def test_bad_state_shapes_raise_torch_nn_errors():
    ours = rkt.LSTM(4, 5)
    x = torch.randn(6, 2, 4)
    with pytest.raises(RuntimeError, match="Expected hidden"):
        ours(x, (torch.zeros(1, 3, 5), torch.zeros(1, 2, 5)))
    with pytest.raises(RuntimeError, match="3-D"):
        ours(x, (torch.zeros(2, 5), torch.zeros(2, 5)))
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(torch.zeros(1, 2, 3, 4))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        ours(torch.randn(6, 2, 3))


@pytest.mark.parametrize("ref_cls,our_cls", PAIRS, ids=IDS)
@pytest.mark.parametrize("packed", [False, True])
def test_inter_layer_dropout_in_training_draws_as_torch_nn(ref_cls, our_cls, packed):
    ref, ours = _pair(ref_cls, our_cls, 3, 4, num_layers=3, dropout=0.5, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([5, 3]))
    torch.manual_seed(3)
    a = ref(x)
    torch.manual_seed(3)
    b = ours(x)
    _close(a, b)  # the same dropout masks: the same random draws in the same order
    torch.manual_seed(4)
    c = ours(x)
    assert not torch.equal(c[1] if ref_cls is not torch.nn.LSTM else c[1][0],
                           b[1] if ref_cls is not torch.nn.LSTM else b[1][0])
    ref.eval(), ours.eval()
    _close(ref(x), ours(x))
    assert torch.equal(ours(x)[1] if ref_cls is not torch.nn.LSTM else ours(x)[1][0],
                       ours(x)[1] if ref_cls is not torch.nn.LSTM else ours(x)[1][0])


# ------------------------------------------------------------ dtypes, devices
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_a_clear_type_error(dtype):
    m = rkt.GRU(3, 4, dtype=dtype)
    with pytest.raises(TypeError, match=str(dtype).replace(".", "\\.")):
        m(torch.randn(5, 2, 3, dtype=dtype))


def test_parameters_of_another_dtype_are_a_clear_type_error():
    m = rkt.LSTM(3, 4)
    with pytest.raises(TypeError, match="weight_ih_l0.*torch.float64.*torch.float32"):
        m(torch.randn(5, 2, 3, dtype=F64))


def test_float32_matches_torch_nn_at_its_tolerance():
    ref, ours = _pair(torch.nn.LSTM, rkt.LSTM, 8, 16, num_layers=2, bidirectional=True)
    x = torch.randn(20, 4, 8)
    a, b = ref(x), ours(x)
    torch.testing.assert_close(b[0], a[0], rtol=1e-5, atol=1e-6)
    assert b[0].dtype == torch.float32


@pytest.mark.parametrize("ref_cls,our_cls", PAIRS, ids=IDS)
def test_another_device_runs_torch_nn_implementation(ref_cls, our_cls):
    """The "meta" device stands in for an accelerator: no kernels there, torch.nn's forward."""
    ours = our_cls(3, 4, num_layers=2, device="meta")
    y, _ = ours(torch.empty(5, 2, 3, device="meta"))
    assert y.device.type == "meta" and y.shape == (5, 2, 4)
    if torch.cuda.is_available():  # pragma: no cover - the CPU CI has none
        ref, ours = _pair(ref_cls, our_cls, 3, 4)
        x = torch.randn(5, 2, 3)
        torch.testing.assert_close(ours.cuda()(x.cuda())[0].cpu(), ref(x)[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- zero copy
def test_contiguous_cpu_tensors_reach_the_kernels_without_copies(monkeypatch):
    seen = {}
    real = ops.lstm_forward_packed

    def spy(data, batch_sizes, w_ih, w_hh, b_ih, b_hh, h0, c0, **kw):
        seen.update(data=data, w_ih=w_ih, w_hh=w_hh, h0=h0, training=kw["training"])
        return real(data, batch_sizes, w_ih, w_hh, b_ih, b_hh, h0, c0, **kw)

    monkeypatch.setattr(ops, "lstm_forward_packed", spy)
    m = rkt.LSTM(3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    h0, c0 = torch.randn(1, 2, 4, dtype=F64), torch.randn(1, 2, 4, dtype=F64)
    y, _ = m(x, (h0, c0))
    assert np.shares_memory(seen["data"], x.numpy())
    assert np.shares_memory(seen["w_ih"], m.weight_ih_l0.detach().numpy())
    assert np.shares_memory(seen["h0"], h0.numpy())
    assert seen["training"] is True
    with torch.no_grad():
        m(x)
    assert seen["training"] is False  # nothing kept for a backward pass that cannot come
    p = pack_padded_sequence(x, torch.tensor([5, 2]))
    m(p)
    assert np.shares_memory(seen["data"], p.data.numpy())


# ------------------------------------------------------------------ convert
def _model():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({
        "enc": torch.nn.Sequential(torch.nn.Linear(3, 4)),
        "lstm": torch.nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True, proj_size=2),
        "deep": torch.nn.Sequential(torch.nn.GRU(4, 3), torch.nn.RNN(3, 3, nonlinearity="relu", bias=False)),
    }).double()


def _apply(model, x):
    h = model["enc"](x)
    a, _ = model["lstm"](h)
    b, _ = model["deep"][0](h.transpose(0, 1))
    c, _ = model["deep"][1](b)
    return a, c


def test_convert_replaces_in_place_and_keeps_outputs_parameters_and_modes():
    model = _model()
    model["deep"][0].eval()
    x = torch.randn(2, 6, 3, dtype=F64)
    before = _apply(model, x)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = rkt.convert(model)
    assert out is model
    assert type(model["lstm"]) is rkt.LSTM and type(model["deep"][0]) is rkt.GRU
    assert type(model["deep"][1]) is rkt.RNN and model["deep"][1].nonlinearity == "relu"
    assert model["lstm"].proj_size == 2 and model["lstm"].batch_first and not model["deep"][1].bias
    assert model["lstm"].training and not model["deep"][0].training
    assert all(p is params[n] for n, p in model.named_parameters())  # the same Parameter objects
    assert all(p.device.type == "cpu" for p in model.parameters())
    _close(before, _apply(model, x))
    sum(t.sum() for t in _apply(model, x)).backward()
    old = model["lstm"].weight_ih_l0.detach().clone()
    opt.step()  # the optimizer made before convert updates the converted modules
    assert not torch.equal(model["lstm"].weight_ih_l0, old)


def test_convert_of_a_recurrent_module_itself_returns_the_replacement():
    ref = torch.nn.GRU(3, 4, dtype=F64).eval()
    new = rkt.convert(ref)
    assert type(new) is rkt.GRU and not new.training
    x = torch.randn(5, 2, 3, dtype=F64)
    _close(ref(x), new(x))
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module"):
        rkt.convert("lstm")
