"""PyTorch state_dict round trips and outputs against torch.nn.LSTM/GRU/RNN."""
import numpy as np
import pytest

from rnnkernels.engine.interop import (dense_from_torch, dense_to_torch, load_torch_state_dict,
                                to_torch_state_dict)
from rnnkernels.layers import GRU, LSTM, Bidirectional, Dense, SimpleRNN
from rnnkernels.models import Sequential

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("cls,torch_cls,kw", [(LSTM, "LSTM", {}), (GRU, "GRU", {}),
                                              (SimpleRNN, "RNN", {}),
                                              (SimpleRNN, "RNN", {"activation": "relu"})])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_layers_match_torch_and_round_trip(cls, torch_cls, kw, bidirectional):
    T, F, U = 5, 3, 4
    wrap = (lambda l: Bidirectional(l)) if bidirectional else (lambda l: l)
    model = Sequential([wrap(cls(U, return_sequences=True, input_shape=(T, F), **kw)),
                        wrap(cls(U, return_sequences=True, **kw))], seed=0, dtype="float64")
    extra = {"nonlinearity": kw.get("activation", "tanh")} if torch_cls == "RNN" else {}
    net = getattr(torch.nn, torch_cls)(F, U, num_layers=2, batch_first=True, bidirectional=bidirectional,
                                       **extra).double()
    # torch -> ours
    load_torch_state_dict(model, net.state_dict())
    x = np.random.default_rng(0).normal(size=(3, T, F))
    lengths = np.array([5, 2, 4])
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    ref, _ = torch.nn.utils.rnn.pad_packed_sequence(net(packed)[0], batch_first=True, total_length=T)
    np.testing.assert_allclose(model.predict(x, lengths=lengths), ref.detach().numpy(), rtol=1e-9, atol=1e-12)
    # ours -> torch -> ours
    sd = to_torch_state_dict(model, as_tensors=True)
    net2 = getattr(torch.nn, torch_cls)(F, U, num_layers=2, batch_first=True, bidirectional=bidirectional,
                                        **extra).double()
    net2.load_state_dict(sd)
    for k, v in net.state_dict().items():
        if k.startswith("weight") or cls is GRU:
            np.testing.assert_array_equal(net2.state_dict()[k].numpy(), v.numpy())
        else:  # one Keras bias: bias_ih carries the sum, bias_hh is zero
            other = k.replace("_ih", "_hh") if "_ih" in k else k.replace("_hh", "_ih")
            total = net2.state_dict()[k].numpy() + net2.state_dict()[other].numpy()
            np.testing.assert_allclose(total, v.numpy() + net.state_dict()[other].numpy(), rtol=1e-12)


def test_keras_single_bias_exports_as_bias_ih():
    layer = LSTM(3)
    layer.build((4, 2), np.random.default_rng(0), "float32")
    sd = to_torch_state_dict([layer])
    np.testing.assert_array_equal(sd["bias_ih_l0"], layer.get_weights()[2])
    np.testing.assert_array_equal(sd["bias_hh_l0"], 0)


def test_bad_state_dicts_are_refused_before_any_change():
    layer = GRU(3)
    layer.build((4, 2), np.random.default_rng(0), "float32")
    before = layer.get_weights()
    sd = to_torch_state_dict([layer])
    with pytest.raises(ValueError, match="unexpected keys"):
        load_torch_state_dict([layer], dict(sd, extra=np.zeros(1)))
    with pytest.raises(ValueError, match="expected shape"):
        load_torch_state_dict([layer], dict(sd, weight_hh_l0=np.zeros((9, 2))))
    with pytest.raises(ValueError, match="missing key"):
        load_torch_state_dict([layer], {k: v for k, v in sd.items() if k != "weight_ih_l0"})
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    old = GRU(3, reset_after=False)
    old.build((4, 2), np.random.default_rng(0), "float32")
    with pytest.raises(ValueError, match="reset_after"):
        to_torch_state_dict([old])


def test_dense_linear_round_trip():
    dense = Dense(3)
    dense.build((4,), np.random.default_rng(0), "float64")
    lin = torch.nn.Linear(4, 3).double()
    dense_from_torch(dense, lin.state_dict())
    x = np.random.default_rng(1).normal(size=(2, 4))
    np.testing.assert_allclose(dense.forward(x), lin(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)
    lin.load_state_dict(dense_to_torch(dense, as_tensors=True))
