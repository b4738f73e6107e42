"""The compiled kernels (rnnkernels.ops) against the NumPy reference, plus the
properties the reference cannot check: bitwise determinism over thread
counts, memory layouts, validation and edge cases."""
import numpy as np
import pytest

import rnnkernels
from rnnkernels import ops, reference
from rnnkernels._core import plan as plan_module, threads as _threads, tuning

from helpers.cells import CELLS, PLAIN, assert_close, call_kwargs, make_case, output_size, run

CELL_NAMES = list(CELLS)

# (T, B, I, H): ones, primes, sizes that are not multiples of the SIMD width,
# and H large enough to span several hidden-unit tiles with a ragged last one.
SHAPES = [(1, 1, 1, 1), (7, 5, 3, 13), (4, 3, 2, 37), (3, 11, 17, 70), (2, 2, 5, 131)]


def _assert_same_bits(results, label=""):
    """Every output and gradient of each run equal to the first run's, bit for bit."""
    for other in results[1:]:
        for k, v in results[0].items():
            if k != "cache" and v is not None:
                assert np.array_equal(v, other[k]), (label, k)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_matches_reference(cell, shape, dtype, threads):
    case = make_case(cell, *shape, dtype=dtype, seed=sum(shape))
    assert_close(run(ops, cell, case), run(reference, cell, case), dtype, cell)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [[6, 0, 3, 6, 1, 2, 5], [0] * 7, [1, 2, 3, 4, 5, 6, 6]],
                         ids=["mixed", "all_zero", "sorted_up"])
def test_lengths_and_reverse(cell, reverse, lengths, threads):
    case = make_case(cell, 6, 7, 4, 37, lengths=np.array(lengths), seed=3)
    assert_close(run(ops, cell, case, reverse=reverse),
                 run(reference, cell, case, reverse=reverse), np.float64, cell)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("bias,states,grads", [(False, False, False), (True, False, True),
                                               (False, True, False)])
def test_optional_arguments(cell, bias, states, grads):
    case = make_case(cell, 5, 4, 3, 9, bias=bias, states=states, grads=grads, seed=5)
    assert_close(run(ops, cell, case), run(reference, cell, case), np.float64, cell)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("varlen", [False, True])
def test_bitwise_identical_for_any_thread_count(cell, varlen):
    lengths = np.array([40, 3, 17, 40, 0, 25] * 6) if varlen else None
    case = make_case(cell, 40, 36, 24, 150, dtype=np.float32, lengths=lengths, seed=9)
    results = []
    for n in (1, 2, 3):
        with rnnkernels.num_threads(n):
            results.append(run(ops, cell, case, reverse=varlen))
    _assert_same_bits(results)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_steps_run_alone_give_the_same_bits(cell, monkeypatch):
    """A variable-length batch's last steps, with too few rows to share, run
    on one thread after the parallel region (tuning.solo_from): whichever
    step that starts at, forward and backward give the same bits, and the
    reference's numbers."""
    lengths = np.array([30, 3, 17, 30, 1, 25, 9, 30, 12, 6, 22])
    case = make_case(cell, 30, 11, 6, 70, dtype=np.float64, lengths=lengths, seed=12)
    expected = run(reference, cell, case)
    results = []
    for first_alone in (None, 0, 1, 8, 20, 29):
        if first_alone is not None:
            monkeypatch.setattr(tuning, "solo_from", lambda plan, *a, s=first_alone: s)
        with rnnkernels.num_threads(2):
            results.append(run(ops, cell, case))
        assert_close(results[-1], expected, np.float64, cell)
    _assert_same_bits(results)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("varlen", [False, True])
def test_row_split_and_unit_split_agree(cell, varlen, monkeypatch):
    """The time loop splits the batch rows over the threads where all of W_hh
    fits in half the L2 (tuning.lane_split), the hidden units elsewhere: each
    split gives the same bits at 1, 2 and 3 threads and the reference's
    numbers, and the two give the same bits as each other, every output and
    gradient (the bias gradients are summed after the loop under both)."""
    lengths = np.array([19, 3, 17, 19, 1, 12, 7] * 3) if varlen else None
    case = make_case(cell, 19, 21, 5, 70, dtype=np.float64, lengths=lengths, seed=21)
    by_split = {}
    for split in ("rows", "units"):
        if split == "units":
            monkeypatch.setattr(tuning, "lane_split", lambda *args, **kwargs: False)
        results = []
        # small steps and loops still take every thread
        with tuning.using(_plan(min_step_flops=1000, min_lane_flops=1000, min_merged_flops=1000)):
            for n in (1, 2, 3):
                _threads.reset_usage()
                with rnnkernels.num_threads(n):
                    results.append(run(ops, cell, case, reverse=varlen))
                    teams = _threads.usage()["max_time_loop_threads"]
                    assert teams <= n
                    if _openmp() and rnnkernels.get_num_threads() >= 2:
                        assert teams >= 2, (split, n)  # the split ran on a team
        _assert_same_bits(results, split)
        assert_close(results[0], run(reference, cell, case, reverse=varlen), np.float64, cell)
        by_split[split] = results[0]
    _assert_same_bits([by_split["rows"], by_split["units"]], "rows vs units")


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("varlen", [False, True])
def test_the_input_side_inside_the_steps_gives_the_same_bits(cell, varlen, monkeypatch):
    """Forward computes x_t W_ih^T inside each step, into the gate rows that
    the recurrent product then accumulates into, instead of one pass over
    every row before the time loop: the same sums in the same order, so the
    same bits for every output and gradient, at 1 and 2 threads."""
    lengths = np.array([11, 3, 9, 11, 1, 6, 7] * 2) if varlen else None
    case = make_case(cell, 11, 14, 9, 45, dtype=np.float32, lengths=lengths, seed=31)
    results = {}
    for in_step in (True, False):
        monkeypatch.setattr(ops, "_INPUT_IN_STEP", in_step)
        for n in (1, 2):
            with rnnkernels.num_threads(n):
                results[in_step, n] = run(ops, cell, case, reverse=varlen)
    _assert_same_bits(list(results.values()))


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("varlen", [False, True])
def test_inference_keeps_one_steps_gates_and_the_training_bits(cell, varlen, monkeypatch):
    """Inference keeps the gates (and the GRU's aux) of one step only, in a
    (B, ...) scratch, where the input side runs inside the steps: nothing after
    a step reads them.  Its outputs are a training forward's (which keeps every
    step's) bit for bit, under both splits of the time loop, at 1 and 2
    threads; the LayerNorm cells, which project the whole input first, keep
    every row's."""
    T, B, I, H = 9, 13, 5, 70
    lengths = np.array([9, 3, 7, 9, 1, 5, 8, 2, 9, 4, 6, 9, 1]) if varlen else None
    case = make_case(cell, T, B, I, H, dtype=np.float32, lengths=lengths, seed=41)
    G, _, _, variants = CELLS[cell]
    requested = []
    scratch = ops._scratch
    monkeypatch.setattr(ops, "_scratch", lambda shape, *a, **k: requested.append(shape) or scratch(shape, *a, **k))
    for split in ("rows", "units"):
        if split == "units":
            monkeypatch.setattr(tuning, "lane_split", lambda *args, **kwargs: False)
        with tuning.using(_plan(min_step_flops=1000, min_lane_flops=1000, min_merged_flops=1000)):
            for n in (1, 2):
                with rnnkernels.num_threads(n):
                    train = run(ops, cell, case, reverse=varlen, backward=False)
                    requested.clear()
                    infer = run(ops, cell, case, reverse=varlen, training=False)
                for k in ("y", "h_n", "c_n"):
                    if k in train:
                        assert np.array_equal(train[k], infer[k]), (split, n, k)
                rows = {shape[0] for shape in requested if shape[-1] in (G * H, H)}
                N = int(lengths.sum()) if varlen else T * B
                assert (N in rows) == ("layer_norm" in variants), (split, n, rows)


def test_the_row_split_follows_the_sizes_and_the_cache():
    """Rows where W_hh fits in half the L2 and the first step has two rows;
    backward only for the plain LSTM and RNN; never a function of the thread count."""
    from rnnkernels._core import cpu
    l2 = cpu.facts().get("l2") or 1 << 20
    two_rows = plan_module.plan(5, 2, None, False)
    one_row = plan_module.plan(5, 1, None, False)
    assert tuning.lane_split("lstm", two_rows, l2 // 2)
    assert not tuning.lane_split("lstm", two_rows, l2 // 2 + 1)
    assert not tuning.lane_split("lstm", one_row, 64)
    assert not tuning.lane_split("gru_reset_before", two_rows, 64)
    assert tuning.lane_split("gru", two_rows, 64) and not tuning.lane_split("gru", two_rows, 64, backward=True)
    assert tuning.lane_split("rnn_relu", two_rows, 64, backward=True)


def test_steps_run_alone_where_each_thread_would_get_little_work():
    """solo_from: the first step whose product gives each thread less than
    the plan's min_step_flops; every step with one thread."""
    plan = plan_module.plan(6, 40, np.array([6, 6, 5, 3, 2, 1] * 6 + [6] * 4), False)
    counts = plan.counts.tolist()
    assert counts == [40, 34, 28, 22, 22, 16]
    step = tuning.current().min_step_flops
    H = 64
    rows = lambda r: r * 2 * 4 * H * H  # noqa: E731  the flops of r rows' LSTM product
    assert tuning.solo_from(plan, 4, H, H, 1) == 6
    first = sum(rows(n) >= 2 * step for n in counts)
    assert 0 < first < 6  # at the default min_step_flops, some steps of each kind
    assert tuning.solo_from(plan, 4, H, H, 2) == first
    assert tuning.solo_from(plan, 4, 1024, 1024, 2) == 6


def test_the_row_split_takes_a_thread_where_the_loop_and_each_steps_share_pay_for_it():
    """threads_for: the unit split (a barrier a step) gives a step's product
    min_step_flops a thread; the row split (no barrier) min_lane_flops a
    thread of each step and min_merged_flops a thread of the whole loop."""
    tuned = tuning.current()
    H = 128
    step = lambda n: 2 * n * H * H  # noqa: E731  the flops of n rows' RNN product
    with rnnkernels.num_threads(2):
        if rnnkernels.get_num_threads() < 2:
            pytest.skip("one CPU")
        for B in (2, 4, 8, 16, 32):
            plan = plan_module.plan(100, B, None, False)
            _, rows = tuning.threads_for(plan, 1, H, H, 2, 40, rows_split=True)
            _, units = tuning.threads_for(plan, 1, H, H, 2, 40, rows_split=False)
            assert rows == (2 if step(B) >= 2 * tuned.min_lane_flops else 1), B
            assert units == (2 if step(B) >= 2 * tuned.min_step_flops else 1), B
        short = plan_module.plan(1, 32, None, False)  # one step: too little to fork for
        assert step(32) < tuned.min_merged_flops * 2
        assert tuning.threads_for(short, 1, H, H, 2, 40, rows_split=True)[1] == 1


def _openmp():
    from rnnkernels._core import _threads as compiled
    return compiled.openmp_enabled()


def _plan(**changes):
    return tuning.current().replace(**changes)


def test_unit_tile_follows_the_size_and_the_plan(monkeypatch):
    """64-unit tiles unless that leaves fewer tiles than the plan's CPUs (up
    to H = 256); never a function of a call's thread count; the environment
    overrides."""
    monkeypatch.delenv("RNNKERNELS_UNIT_TILE", raising=False)
    two, sixteen = _plan(cpus=2), _plan(cpus=16)
    assert [tuning.unit_tile(H, two) for H in (1, 64, 127, 128, 256, 512)] == [32, 32, 32, 64, 64, 64]
    assert [tuning.unit_tile(H, sixteen) for H in (128, 256, 257, 1024)] == [32, 32, 64, 64]
    assert tuning.unit_tile(128, _plan(cpus=4, tile_wide=48, tile_narrow=16, tile_narrow_max_h=512)) == 16
    monkeypatch.setenv("RNNKERNELS_UNIT_TILE", "16")
    assert tuning.unit_tile(512, two) == 16


def test_weight_gradient_pieces_follow_the_shape_and_the_plan():
    """The rows of each weight-gradient reduction are split into one piece per
    CPU of the plan, each at least 256 rows, at most 16: never a function of
    a call's thread count."""
    two, sixteen = _plan(cpus=2), _plan(cpus=16)
    assert [tuning.wgrad_pieces(k, two) for k in (0, 1, 255, 256, 511, 512, 3200)] == [1, 1, 1, 1, 1, 2, 2]
    assert [tuning.wgrad_pieces(k, sixteen) for k in (255, 1024, 1279, 4096, 10 ** 6)] == [1, 4, 4, 16, 16]
    assert tuning.wgrad_pieces(3200, _plan(cpus=3)) == 3
    assert [tuning.wgrad_pieces(k, _plan(cpus=1)) for k in (128, 12800)] == [1, 1]


@pytest.mark.parametrize("cell, T, B, H, pieces", [("lstm", 40, 26, 13, 4), ("gru", 37, 29, 7, 4),
                                                   ("gru_reset_before", 37, 29, 7, 4),
                                                   ("rnn_tanh", 23, 31, 33, 2)])
def test_more_weight_gradient_pieces_same_answer_any_thread_count(cell, T, B, H, pieces, monkeypatch):
    """A machine with more CPUs sums the weight gradients in more pieces of
    rows (here of unequal sizes, each over more than one of the kernel's
    256-row chunks): the result is still the reference's, and still bitwise
    identical over thread counts."""
    case = make_case(cell, T, B, 3, H, dtype=np.float64, seed=4)
    expected = run(reference, cell, case)
    results = []
    with tuning.using(_plan(cpus=16)):
        assert tuning.wgrad_pieces(T * B) == pieces
        for n in (1, 2, 3):
            with rnnkernels.num_threads(n):
                results.append(run(ops, cell, case))
            assert_close(results[-1], expected, np.float64, cell)
    _assert_same_bits(results)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_kernels_refuse_zero_weight_gradient_pieces(cell, monkeypatch):
    monkeypatch.setattr(tuning, "wgrad_pieces", lambda *args: 0)
    case = make_case(cell, 3, 2, 2, 5, seed=1)
    with pytest.raises(ValueError, match="wgrad_pieces: expected at least 1, got 0"):
        run(ops, cell, case)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_any_memory_layout(cell):
    case = make_case(cell, 5, 4, 6, 11, seed=2)
    want = run(ops, cell, case)
    odd = dict(case)
    for k in ("x", "w_ih", "w_hh", "h0", "dy"):
        a = case[k]
        if k == "x":
            big = np.zeros(a.shape[:2] + (2 * a.shape[2],), a.dtype)  # strided view
            big[..., ::2] = a
            a = big[..., ::2]
        elif a.ndim == 2:
            a = np.asfortranarray(a)
        a = a.copy() if a.flags.writeable is False else a
        a.flags.writeable = False  # read-only must work
        odd[k] = a
    got = run(ops, cell, odd)
    assert_close(got, want, np.float64, cell)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_inference_keeps_nothing(cell):
    case = make_case(cell, 5, 3, 4, 8, seed=1)
    train = run(ops, cell, case, backward=False)
    infer = run(ops, cell, case, training=False)
    assert infer["cache"] is None
    np.testing.assert_array_equal(train["y"], infer["y"])
    np.testing.assert_array_equal(train["h_n"], infer["h_n"])
    _, name, _, _ = CELLS[cell]
    with pytest.raises(ValueError, match="cache"):
        getattr(ops, f"{name}_backward")(None, case["dy"])


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_variable_length_inference_again_and_again(cell, threads):
    """Inference gathers the inputs into a recycled scratch buffer, next to the
    kernels' own scratch: repeated calls (the buffers then already large
    enough, so handed out again) must keep giving the reference's answer."""
    case = make_case(cell, 6, 7, 4, 37, lengths=np.array([6, 0, 3, 6, 1, 2, 5]), seed=5)
    want = run(reference, cell, case, training=False)
    for _ in range(3):
        got = run(ops, cell, case, training=False)
        assert_close({"y": got["y"], "h_n": got["h_n"]}, {"y": want["y"], "h_n": want["h_n"]},
                     np.float64, cell)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_padding_is_zero_in_recycled_buffers(cell, threads, monkeypatch):
    """The kernels write y and dL/dx in the caller's padded layout and zero the
    rows past each length themselves: buffers that come back from the pool
    full of old values must not leak them."""
    from rnnkernels._core import memory as _memory
    handed_out = _memory.empty

    def dirty(shape, dtype):
        out = handed_out(shape, dtype)
        out.fill(np.nan)
        return out

    monkeypatch.setattr(ops, "_aligned_empty", dirty)
    monkeypatch.setattr(plan_module, "_aligned_empty", dirty)
    lengths = np.array([6, 0, 3, 6, 1, 2, 5])
    case = make_case(cell, 6, 7, 4, 37, lengths=lengths, seed=6)
    got = run(ops, cell, case)
    past = np.arange(6)[:, None] >= lengths[None, :]
    assert np.all(got["y"][past] == 0) and np.all(got["d_x"][past] == 0)
    assert_close(got, run(reference, cell, case), np.float64, cell)


def test_kernels_check_the_buffers_and_row_maps_they_write_through(monkeypatch):
    """The compiled kernels write y and dX through index arrays and into
    buffers ops allocated: a bad index, size, element type, plan or a
    read-only output must be a ValueError naming it, never a write outside
    an array."""
    kernels = tuning.kernels()
    real, seen = kernels.forward, []
    monkeypatch.setattr(kernels, "forward", lambda a, *args: seen.append((dict(a), args)) or real(a, *args))
    rng = np.random.default_rng(0)
    T, B, I, H = 3, 2, 2, 5
    ops.rnn_forward(rng.standard_normal((T, B, I)), rng.standard_normal((H, I)), rng.standard_normal((H, H)),
                    None, None, lengths=np.array([3, 1]))
    a, args = seen[0]

    def call(**changes):
        return real(dict(a, **changes), *args)

    assert call() == 1
    bad = a["padding"].copy()
    bad[0] = T * B
    with pytest.raises(ValueError, match="padding: index 6 out of range for 6 rows"):
        call(padding=bad)
    with pytest.raises(ValueError, match="padding: expected 2 indices, got 1"):
        call(padding=a["padding"][:1])
    bad = a["x_rows"].copy()
    bad[-1] = -1
    with pytest.raises(ValueError, match="x_rows: index -1 out of range"):
        call(x_rows=bad)
    with pytest.raises(ValueError, match="xp: expected 8 values, got 6"):
        call(xp=np.empty((3, I)))
    with pytest.raises(ValueError, match="y: expected elements of 8 bytes, got 4"):
        call(y=np.empty((T * B, H), np.float32))
    with pytest.raises(ValueError, match="h: .*read-only"):
        read_only = a["h"].copy()
        read_only.flags.writeable = False
        call(h=read_only)
    with pytest.raises(ValueError, match=r"counts: expected non-increasing values in \[1, 2\]"):
        call(counts=np.array([1, 2, 1], np.intp), offsets=np.array([0, 1, 3, 4], np.intp))
    with pytest.raises(ValueError, match=r"offsets: expected offsets\[2\] = 3"):
        call(offsets=np.array([0, 2, 4, 5], np.intp))
    with pytest.raises(ValueError, match="tiles: expected bounds from 0 to 5"):
        call(tiles=np.array([0, 4], np.intp))
    with pytest.raises(ValueError, match="cell: expected an index in"):
        real(a, 99, *args[1:])


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_cache_reusable(cell):
    case = make_case(cell, 4, 3, 2, 5, seed=4)
    out = run(ops, cell, case)
    _, name, _, _ = CELLS[cell]
    again = getattr(ops, f"{name}_backward")(out["cache"], case["dy"], case["dh_n"],
                                             *([case["dc_n"]] if name == "lstm" else []))
    for k, v in again.items():
        if v is not None:
            np.testing.assert_array_equal(v, out["d_" + k])


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("T,B", [(0, 3), (4, 0)])
def test_empty_batch_or_time(cell, T, B):
    case = make_case(cell, T, B, 3, 5, seed=0)
    out = run(ops, cell, case)
    assert out["y"].shape == (T, B, output_size(cell, 5))
    np.testing.assert_array_equal(out["h_n"], case["h0"])  # no step ran
    assert not np.any(out["d_w_ih"]) and not np.any(out["d_w_hh"])
    np.testing.assert_array_equal(out["d_h0"], case["dh_n"])


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_nan_propagates_inf_saturates(cell):
    case = make_case(cell, 4, 3, 2, 6, seed=6)
    case["x"][1, 0, 0] = np.nan
    out = run(ops, cell, case, backward=False)
    assert np.isnan(out["y"][1:, 0]).all()          # NaN carried along its sequence
    assert np.isfinite(out["y"][:, 1:]).all()        # and nowhere else
    huge = make_case(cell, 4, 3, 2, 6, seed=6, states=False)
    huge["x"] *= 1e6
    out = run(ops, cell, huge, backward=False)
    if cell != "rnn_relu":  # relu is unbounded by definition
        assert np.isfinite(out["y"]).all() and np.abs(out["y"]).max() <= 1


def test_float32_saturation_is_exact_at_the_limits():
    x = np.array([[[-1e30], [-100.0], [0.0], [100.0], [1e30]]], np.float32)
    w_ih = np.ones((1, 1), np.float32)
    w_hh = np.zeros((1, 1), np.float32)
    y, _, _ = ops.rnn_forward(x, w_ih, w_hh, None, None, training=False)
    np.testing.assert_array_equal(y.ravel(), [-1, -1, 0, 1, 1])


# ------------------------------------------------------------ validation
def _lstm_args(T=3, B=2, I=4, H=5, dtype=np.float64):
    case = make_case("lstm", T, B, I, H, dtype=dtype)
    return case, (case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])


@pytest.mark.parametrize("mutate,exc,match", [
    (lambda a: {"x": a["x"][0]}, ValueError, r"x: expected 3 dimensions"),
    (lambda a: {"x": a["x"].astype(np.int32)}, TypeError, r"x: expected dtype float32 or float64"),
    (lambda a: {"x": "text"}, TypeError, r"x:"),
    (lambda a: {"w_ih": a["w_ih"][:, :-1]}, ValueError, r"w_ih: expected shape \(20, 4\)"),
    (lambda a: {"w_hh": a["w_hh"][:15]}, ValueError, r"w_hh: expected shape \(4\*H, H\)"),
    (lambda a: {"w_hh": np.zeros((15, 5))}, ValueError, r"4 gates"),
    (lambda a: {"b_ih": a["b_ih"][:-1]}, ValueError, r"b_ih: expected shape \(20,\)"),
    (lambda a: {"b_hh": np.zeros((20, 1))}, ValueError, r"b_hh"),
    (lambda a: {"h0": np.zeros((3, 5))}, ValueError, r"h0: expected shape \(2, 5\)"),
    (lambda a: {"c0": np.zeros((2, 4))}, ValueError, r"c0: expected shape \(2, 5\)"),
    (lambda a: {"lengths": [1, 2, 3]}, ValueError, r"lengths: expected shape \(2,\)"),
    (lambda a: {"lengths": [4, 1]}, ValueError, r"lengths: expected values in \[0, 3\]"),
    (lambda a: {"lengths": [-1, 1]}, ValueError, r"lengths: expected values in"),
    (lambda a: {"lengths": [1.5, 1]}, TypeError, r"lengths: expected integers"),
    (lambda a: {"lengths": ["a", "b"]}, TypeError, r"lengths"),
    (lambda a: {"w_ih": np.zeros((20, 4), complex)}, TypeError, r"w_ih: expected a real"),
])
def test_lstm_forward_rejects(mutate, exc, match):
    case, _ = _lstm_args()
    kwargs = dict(x=case["x"], w_ih=case["w_ih"], w_hh=case["w_hh"], b_ih=case["b_ih"],
                  b_hh=case["b_hh"], h0=case["h0"], c0=case["c0"])
    kwargs.update(mutate(case))
    with pytest.raises(exc, match=match):
        ops.lstm_forward(**kwargs)


def test_cell_specific_rejections():
    case = make_case("rnn_tanh", 3, 2, 4, 5)
    args = (case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'"):
        ops.rnn_forward(*args, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="w_hh: expected shape \\(3\\*H, H\\) for gru"):
        ops.gru_forward(*args)
    gcase = make_case("gru", 3, 2, 4, 5)
    with pytest.raises(TypeError, match="reset_after"):
        ops.gru_forward(gcase["x"], gcase["w_ih"], gcase["w_hh"], None, None, reset_after="no")


@pytest.mark.parametrize("cell", PLAIN)
def test_backward_rejects_bad_gradients_and_caches(cell):
    case = make_case(cell, 3, 2, 4, 5)
    out = run(ops, cell, case, backward=False)
    _, name, _, _ = CELLS[cell]
    bwd = getattr(ops, f"{name}_backward")
    with pytest.raises(ValueError, match=r"dy: expected shape \(3, 2, 5\)"):
        bwd(out["cache"], np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match=r"dh_n: expected shape \(2, 5\)"):
        bwd(out["cache"], None, np.zeros((5, 2)))
    with pytest.raises(TypeError, match="cache"):
        bwd({"not": "a cache"}, None)
    other = "rnn" if name != "rnn" else "lstm"
    with pytest.raises(TypeError, match=f"from {name}_forward"):
        getattr(ops, f"{other}_backward")(out["cache"], None)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]], ids=["equal", "ragged"])
def test_no_input_gradient_skips_dx_and_changes_nothing_else(cell, lengths):
    """``input_grad=False`` (a first layer): "x" is None in ops and in the reference,
    and every other gradient is bitwise what a full backward gives."""
    case = make_case(cell, 4, 3, 5, 11, dtype=np.float64, seed=9,
                     lengths=None if lengths is None else np.array(lengths))
    _, kind, _, _ = CELLS[cell]
    finals = [case["dh_n"]] + ([case["dc_n"]] if kind == "lstm" else [])
    for mod in (ops, reference):
        full = run(mod, cell, case)
        out = getattr(mod, f"{kind}_forward")(case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"],
                                              training=True, **call_kwargs(cell, case))
        g = getattr(mod, f"{kind}_backward")(out[-1], case["dy"], *finals, input_grad=False)
        assert g["x"] is None
        for k, v in g.items():
            if k != "x":
                want = full["d_" + k]
                assert (v is None and want is None) or np.array_equal(v, want), (mod.__name__, k)
        with pytest.raises(TypeError, match="input_grad"):
            getattr(mod, f"{kind}_backward")(out[-1], case["dy"], input_grad="no")
