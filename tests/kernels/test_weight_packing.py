"""The weights packed into the GEMM kernel's panels (the compiled kernels'
pack_blocks, block_starts, permute_input_weights), against NumPy."""
import numpy as np
import pytest

from rnnkernels._core.tuning import kernels as _kernels

kernels = _kernels()


def _panels_numpy(src, nr):
    k, n = src.shape
    npanel = -(-n // nr)
    padded = np.zeros((k, npanel * nr), src.dtype)
    padded[:, :n] = src
    return padded.reshape(k, npanel, nr).transpose(1, 0, 2).ravel()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,cols,bounds", [(1, 1, [0, 1]), (13, 7, [0, 5, 5, 13]),
                                              (96, 128, [0, 64, 96]), (40, 33, [0, 17, 40]),
                                              (64, 5, [0, 32, 64]), (24, 20, [0, 11, 24]),
                                              (48, 136, [0, 8, 48])])
@pytest.mark.parametrize("row_blocks", [False, True])
@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_pack_blocks_matches_numpy(dtype, rows, cols, bounds, row_blocks, mapped, nthreads):
    """Blocks W[b0:b1].T (row_blocks) or W[:, b0:b1] of W = w[rows], each in
    panels, one after the other."""
    rng = np.random.default_rng(rows * cols)
    # bounds run over w's rows (row_blocks) or its columns
    w = rng.standard_normal((rows, cols) if row_blocks else (cols, rows)).astype(dtype)
    perm = rng.permutation(w.shape[0]).astype(np.intp) if mapped else np.empty(0, np.intp)
    W = w[perm] if mapped else w
    nr = kernels.panel_values(dtype, 1, 1)
    bounds = np.array(bounds, np.intp)
    blocks = [W[b0:b1].T if row_blocks else W[:, b0:b1] for b0, b1 in zip(bounds[:-1], bounds[1:])]
    expected = np.concatenate([_panels_numpy(b, nr) for b in blocks])
    k = w.shape[1] if row_blocks else w.shape[0]
    starts = kernels.block_starts(dtype, k, bounds)
    assert starts[-1] == expected.size and starts[0] == 0 and np.all(np.diff(starts) >= 0)
    out = np.full(expected.size, np.nan, dtype)
    kernels.pack_blocks(w, perm, bounds, starts, row_blocks, out, nthreads)
    np.testing.assert_array_equal(out, expected)


def test_pack_blocks_rejects_bad_arguments():
    w = np.zeros((6, 5), np.float32)
    no_rows = np.empty(0, np.intp)
    bounds = np.array([0, 3, 6], np.intp)
    starts = kernels.block_starts("float32", 5, bounds)
    with pytest.raises(ValueError, match="out: expected"):
        kernels.pack_blocks(w, no_rows, bounds, starts, True, np.zeros(7, np.float32), 1)
    with pytest.raises(ValueError, match="bounds: expected increasing values in \\[0, 6\\]"):
        kernels.pack_blocks(w, no_rows, np.array([0, 4, 3], np.intp), starts, True, np.zeros(1, np.float32), 1)
    with pytest.raises(ValueError, match="bounds: expected increasing values in \\[0, 5\\]"):
        kernels.pack_blocks(w, no_rows, bounds, starts, False, np.zeros(1, np.float32), 1)
    with pytest.raises(ValueError, match="rows: expected 6 row indices"):
        kernels.pack_blocks(w, np.arange(3), bounds, starts, True, np.zeros(1, np.float32), 1)
    with pytest.raises(ValueError, match="rows: row 6 is out of range"):
        kernels.pack_blocks(w, np.arange(1, 7), bounds, starts, True, np.zeros(1, np.float32), 1)
    with pytest.raises(ValueError, match="starts: expected 3 block starts"):
        kernels.pack_blocks(w, no_rows, bounds, starts[:2], True, np.zeros(int(starts[-1]), np.float32), 1)
    wrong = starts.copy()
    wrong[1] += 1
    with pytest.raises(ValueError, match="starts: block 0 does not hold a 5 x 3 panel block"):
        kernels.pack_blocks(w, no_rows, bounds, wrong, True, np.zeros(int(starts[-1]), np.float32), 1)
    with pytest.raises(ValueError, match="bounds: expected increasing values"):
        kernels.block_starts("float32", 5, np.array([0, 4, 3], np.intp))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("G,I", [(1, 1), (7, 3), (512, 40), (2048, 17)])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_permute_input_weights(dtype, G, I, nthreads):
    rng = np.random.default_rng(G + I)
    w = rng.standard_normal((G, I)).astype(dtype)
    w.flags.writeable = False
    colmap = rng.permutation(G).astype(np.intp)
    w_t, w_p = np.full((I, G), np.nan, dtype), np.full((G, I), np.nan, dtype)
    kernels.permute_input_weights(w, colmap, w_t, w_p, nthreads)
    np.testing.assert_array_equal(w_p, w[colmap])
    np.testing.assert_array_equal(w_t, w[colmap].T)
    w_t[:] = np.nan  # inference: the rows are not wanted
    kernels.permute_input_weights(w, colmap, w_t, np.empty((0, I), dtype), nthreads)
    np.testing.assert_array_equal(w_t, w[colmap].T)
    w_p[:] = np.nan  # the input side inside the steps: the transpose is not wanted
    kernels.permute_input_weights(w, colmap, np.empty((0, G), dtype), w_p, nthreads)
    np.testing.assert_array_equal(w_p, w[colmap])


def test_permute_input_weights_rejects_bad_arguments():
    w = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="colmap: expected 4 rows"):
        kernels.permute_input_weights(w, np.arange(3), np.zeros((3, 4), np.float32), np.zeros((4, 3), np.float32), 1)
    with pytest.raises(ValueError, match="colmap: row 4 is out of range"):
        kernels.permute_input_weights(w, np.arange(1, 5), np.zeros((3, 4), np.float32), np.zeros((4, 3), np.float32), 1)
    with pytest.raises(ValueError, match="w_ih_t, w_ih_p: expected shapes"):
        kernels.permute_input_weights(w, np.arange(4), np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32), 1)


def test_panel_sizes_reject_other_dtypes():
    with pytest.raises(TypeError, match="dtype"):
        kernels.panel_values("int32", 2, 2)
    with pytest.raises(TypeError, match="dtype"):
        kernels.block_starts("int32", 2, np.array([0, 2], np.intp))


