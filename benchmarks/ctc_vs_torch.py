"""CTC loss + gradient: rnnkernels.ops.ctc_loss against PyTorch's CPU ctc_loss + autograd.

Both take the same unnormalised logits (T, B, C) and give each sample's loss and the
gradient of their sum with respect to the logits (PyTorch through log_softmax).
Interleaved in one run, medians, ratio = ours / PyTorch's (lower is faster).

    PYTHONPATH=. python benchmarks/ctc_vs_torch.py [--repeats 40] [--json OUT.json]
"""
import argparse
import json
import platform
import time

import numpy as np

import rnnkernels
from rnnkernels import ops

SHAPES = [(200, 32, 30, 50), (100, 16, 12, 7), (400, 8, 30, 80)]  # T, B, C, S


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for T, B, C, S in SHAPES:
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(0)
            z = rng.standard_normal((T, B, C)).astype(dtype)
            tl = rng.integers(S // 2, S + 1, B)
            tg = rng.integers(1, C, (B, S))
            il = rng.integers(min(T, 2 * S + 1), T + 1, B)
            zt, tgt, ilt, tlt = map(torch.tensor, (z, tg, il, tl))

            def ours():
                return ops.ctc_loss(z, tg, il, tl)

            def theirs():
                x = zt.clone().requires_grad_(True)
                torch.nn.functional.ctc_loss(x.log_softmax(2), tgt, ilt, tlt, reduction="sum").backward()
                return x.grad

            np.testing.assert_allclose(ours()[1], theirs().numpy(), rtol=1e-3, atol=1e-4)
            a, b = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                ours()
                a.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                theirs()
                b.append(time.perf_counter() - t0)
            row = dict(T=T, B=B, C=C, S=S, dtype=np.dtype(dtype).name, ours_ms=1e3 * float(np.median(a)),
                       torch_ms=1e3 * float(np.median(b)), ratio=float(np.median(a) / np.median(b)))
            rows.append(row)
            print(f"T={T:4d} B={B:3d} C={C:3d} S={S:3d} {row['dtype']:8s} ours {row['ours_ms']:8.2f} ms  "
                  f"torch {row['torch_ms']:8.2f} ms  ratio {row['ratio']:.2f}", flush=True)
    meta = dict(threads=rnnkernels.get_num_threads(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, rnnkernels=rnnkernels.__version__, machine=platform.processor(),
                repeats=args.repeats, command="PYTHONPATH=. python benchmarks/ctc_vs_torch.py")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(meta, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
