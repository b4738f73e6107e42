"""The pieces of data-parallel training that need no MPI: how a batch is cut over the
ranks, the per-sample keyed draws that make masks independent of the cut, launch
detection from the environment, the loss's global divisor."""
import numpy as np
import pytest

from rnnkernels import losses
from rnnkernels._util.keyed_random import KeyedRandom, dataset_sample_ids
from rnnkernels.distributed import LaunchError, active, part, rows
from rnnkernels.distributed.launch import default_threads, launched_rank, launched_size, local_size
from rnnkernels.distributed.partition import check_launch
from rnnkernels.layers import GRU, LSTM, Dense, Dropout, GlobalAveragePooling1D
from rnnkernels.models import Sequential


@pytest.mark.parametrize("n", [1, 2, 5, 7, 10, 32, 97])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 8])
def test_parts_cover_the_batch_in_rank_order_as_evenly_as_possible(n, size):
    parts = [part(n, r, size) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # contiguous, in rank order
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_part_sizes_of_a_ten_row_batch_on_four_ranks():
    assert [part(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]


@pytest.mark.parametrize("n", [1, 5, 32, 33])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_rows_by_length_cover_the_batch_once_and_even_the_work(n, size):
    lengths = np.random.default_rng(n).integers(9, 84, n)
    got = [rows(n, r, size, lengths) for r in range(size)]
    assert sorted(np.concatenate(got).tolist()) == list(range(n))
    assert all(np.all(np.diff(g) > 0) for g in got)  # ascending
    counts = [len(g) for g in got]
    assert max(counts) - min(counts) <= 1
    if n >= 4 * size:
        work = [lengths[g].sum() for g in got]
        contiguous = [lengths[a:b].sum() for a, b in (part(n, r, size) for r in range(size))]
        assert max(work) - min(work) <= max(contiguous) - min(contiguous) + lengths.max()
        assert max(work) / np.mean(work) < 1.06
    np.testing.assert_array_equal(rows(n, 0, size), np.arange(*part(n, 0, size)))  # no cost


def test_rows_deal_longest_first_in_snake_order():
    lengths = np.array([5, 9, 1, 7, 3, 8])  # by length: 1(9) 5(8) 3(7) 0(5) 4(3) 2(1)
    # lanes 0, 1, 1, 0, 0, 1 down that order
    assert rows(6, 0, 2, lengths).tolist() == [0, 1, 4]      # 9 + 5 + 3 = 17 frames
    assert rows(6, 1, 2, lengths).tolist() == [2, 3, 5]      # 8 + 7 + 1 = 16
    with pytest.raises(ValueError, match="cost: expected 6 entries"):
        rows(6, 0, 2, lengths[:5])


def test_bad_launches_name_the_fix():
    with pytest.raises(LaunchError, match=r"mpiexec -n 4: more ranks than samples .* \(3\); launch at most 3"):
        check_launch(4, n_samples=3, batch_size=8)
    with pytest.raises(LaunchError, match=r"more ranks than the batch size \(2\).*at least 3"):
        check_launch(3, n_samples=100, batch_size=2)
    check_launch(2, n_samples=2, batch_size=2)  # exactly enough is fine
    assert issubclass(LaunchError, ValueError)


def test_a_sample_draws_the_same_values_wherever_it_sits_in_the_batch():
    ids = np.array([11, 3, 40, 7, 25])
    whole = KeyedRandom((5, 1, 2), ids).child(4)
    a, z = whole.random((5, 6)), whole.random((9, 5, 2), batch_axis=1)  # a second draw: zoneout-like
    perm = np.array([3, 0, 4, 1, 2])
    moved = KeyedRandom((5, 1, 2), ids[perm]).child(4)
    np.testing.assert_array_equal(moved.random((5, 6)), a[perm])
    np.testing.assert_array_equal(moved.random((9, 5, 2), 1), z[:, perm])
    part_ = KeyedRandom((5, 1, 2), ids[1:3]).child(4)  # a rank's rows
    np.testing.assert_array_equal(part_.random((2, 6)), a[1:3])
    assert not np.array_equal(a[:, :2], z[0, :, :].reshape(5, -1)[:, :2])  # draws differ
    other = KeyedRandom((5, 1, 3), ids).child(4)  # another epoch: other values
    assert not np.array_equal(other.random((5, 6)), a)


def test_keyed_uniforms_look_uniform_and_streams_are_independent():
    r = KeyedRandom((0, 1, 0), np.arange(1000))
    u = r.child(0).random((1000, 50))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    v = r.child(1).random((1000, 50))
    assert abs(np.corrcoef(u.ravel(), v.ravel())[0, 1]) < 0.025  # 5 sigma of 50000 pairs
    shared = r.child(0).random((1, 50), batch_axis=None)  # one mask for the whole batch
    assert shared.shape == (1, 50)
    with pytest.raises(ValueError, match="axis 0 has 3 entries, the batch has 1000 samples"):
        r.random((3, 2))


def test_dataset_rows_are_keyed_like_the_arrays_when_the_dataset_says_its_batch_size():
    class D:
        batch_size = 4
    np.testing.assert_array_equal(dataset_sample_ids(D(), 2, 3), [8, 9, 10])
    packed = dataset_sample_ids(object(), 2, 3)
    assert len(set(packed.tolist())) == 3 and int(packed[0]) >> 63 == 1


def test_launch_is_read_from_the_launchers_environment():
    assert launched_size({}) == 1 and launched_rank({}) == 0 and local_size({}) is None
    hydra = {"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}
    assert (launched_size(hydra), launched_rank(hydra), local_size(hydra)) == (4, 3, 2)
    ompi = {"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert (launched_size(ompi), launched_rank(ompi), local_size(ompi)) == (8, 5, 4)
    assert default_threads(10_000) == 1


def test_a_plain_process_trains_alone():
    assert active() is None  # no launcher in the test run: fit is the one-process loop


@pytest.mark.parametrize("name", ["categorical_crossentropy", "mse", "binary_crossentropy"])
@pytest.mark.parametrize("masked", [False, True])
def test_shares_of_a_batch_with_the_global_count_add_up_to_the_whole_batch(name, masked):
    rng = np.random.default_rng(0)
    B, T, C = 7, 4, 3
    p = rng.dirichlet(np.ones(C), size=(B, T))
    y = np.eye(C)[rng.integers(0, C, (B, T))]
    mask = (rng.random((B, T)) < 0.7).astype(float) if masked else None
    sw = rng.random(B)
    loss = losses.get(name)
    value, grad = loss.value_and_grad(y, p, mask, sw)
    count = float(np.count_nonzero(mask)) if masked else float(B * T)
    shares = [loss.value_and_grad(y[a:b], p[a:b], None if mask is None else mask[a:b], sw[a:b],
                                  count=count) for a, b in ((0, 3), (3, 7))]
    assert sum(v for v, _ in shares) == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(np.concatenate([g for _, g in shares]), grad, rtol=1e-12)


def test_the_share_without_weights_is_bitwise_the_one_process_gradient():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 4)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 6)]
    loss = losses.get("categorical_crossentropy")
    _, whole = loss.from_logits_value_and_grad(y, z)
    _, first = loss.from_logits_value_and_grad(y[:2], z[:2], count=6.0)
    np.testing.assert_array_equal(first, whole[:2])


def _dropout_model():
    m = Sequential([GRU(4, return_sequences=True, recurrent_dropout=0.3, input_shape=(None, 2)),
                    GlobalAveragePooling1D(), Dropout(0.4), Dense(3, activation="softmax")], seed=5)
    m.compile("sgd", "sparse_categorical_crossentropy")
    return m


def test_one_process_masks_depend_on_the_sample_not_on_its_batch():
    """The one-process path uses the keyed draws too: a sample's dropout masks are the same
    whether it is trained in a batch of 6 or alone, so splitting the batch changes nothing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 2)).astype("float32")
    m = _dropout_model()
    whole = KeyedRandom((5, 1, 0), np.arange(6))
    out = m._forward(x, True, None, whole)[0]
    for a, b in ((0, 4), (4, 6)):
        piece = m._forward(x[a:b], True, None, KeyedRandom((5, 1, 0), np.arange(a, b)))[0]
        np.testing.assert_allclose(piece, out[a:b], rtol=1e-6, atol=1e-7)


def test_lstm_zoneout_masks_are_keyed_per_sample():
    layer = LSTM(3, zoneout=0.3, return_sequences=True)
    x = np.random.default_rng(2).normal(size=(4, 6, 2)).astype("float32")
    layer.build(x.shape[1:], np.random.default_rng(0))
    layer.rng = KeyedRandom((1,), np.arange(4))
    whole = layer.forward(x, training=True)
    layer.rng = KeyedRandom((1,), np.arange(2, 4))
    np.testing.assert_allclose(layer.forward(x[2:], training=True), whole[2:], rtol=1e-6, atol=1e-7)
