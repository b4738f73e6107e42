"""Drop-in training steps: the same PyTorch model with ``torch.nn``'s recurrent
module and with ``rnnkernels.torch``'s.

One step is what a training loop does: forward, a loss, backward and an Adam
step, all overheads included (the module's Python, the operator dispatch, the
optimizer). Both models start from the same weights and see the same batch: a
padded ``(T, B, I)`` tensor, or a ``PackedSequence`` of random lengths in
``[T/4, T]`` (packed once, outside the timed step, as a data loader would).
The two are timed interleaved, in an order alternating per repetition, one
warm-up discarded; the table reports medians and the ratio ours / torch.nn's
(below 1: ours is faster).

``rows(repeats, threads, dtype)`` is the interface ``rnnkernels bench
--dropin`` calls (``dropin_keras.rows`` has the same one).
"""
import statistics
import time

import numpy as np

SIZE = dict(B=32, T=100, I=40, H=128)
QUICK_SIZE = dict(B=4, T=10, I=5, H=8)  # --quick: exercises the code, means nothing
CELLS = ("lstm", "gru", "rnn")
LAYERS = (1, 2, 3)


def _model(torch, recurrent, D, H, classes=10):
    head = torch.nn.Linear(D * H, classes)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = recurrent, head

        def forward(self, x):
            y, _ = self.rnn(x)
            y = y.data if isinstance(y, torch.nn.utils.rnn.PackedSequence) else y
            return self.head(y)

    return Model()


def _step(model, opt, x, target, loss_fn):
    opt.zero_grad(set_to_none=True)
    out = model(x)
    loss = loss_fn(out, target)
    loss.backward()
    opt.step()
    return out


def _case(torch, rkt, cell, layers, bidirectional, packed, dtype, repeats, seed, size):
    B, T, I, H = size["B"], size["T"], size["I"], size["H"]
    D = 2 if bidirectional else 1
    tdtype = getattr(torch, dtype)
    torch.manual_seed(seed)
    peer_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    ours_cls = {"lstm": rkt.LSTM, "gru": rkt.GRU, "rnn": rkt.RNN}[cell]
    peer_rnn = peer_cls(I, H, num_layers=layers, bidirectional=bidirectional, dtype=tdtype)
    ours_rnn = ours_cls(I, H, num_layers=layers, bidirectional=bidirectional, dtype=tdtype)
    ours_rnn.load_state_dict(peer_rnn.state_dict())
    peer = _model(torch, peer_rnn, D, H).to(tdtype)
    ours = _model(torch, ours_rnn, D, H).to(tdtype)
    ours.head.load_state_dict(peer.head.state_dict())
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((T, B, I)).astype(dtype))
    if packed:
        lengths = rng.integers(T // 4, T + 1, B)
        lengths[0] = T
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=False)
        n_rows = int(lengths.sum())
    else:
        n_rows = T * B
    target = torch.from_numpy(rng.integers(0, 10, n_rows))
    if not packed:
        target = target.reshape(T, B)
    loss_fn = lambda out, t: torch.nn.functional.cross_entropy(out.reshape(-1, 10), t.reshape(-1))  # noqa: E731
    systems = {"torch.nn": (peer, torch.optim.Adam(peer.parameters(), 1e-3)),
               "rnnkernels.torch": (ours, torch.optim.Adam(ours.parameters(), 1e-3))}
    with torch.no_grad():
        diff = float((peer(x) - ours(x)).abs().max())
    times = {name: [] for name in systems}
    names = list(systems)
    for rep in range(repeats + 1):  # the first is a warm-up
        for name in (names if rep % 2 == 0 else names[::-1]):
            model, opt = systems[name]
            start = time.perf_counter()
            _step(model, opt, x, target, loss_fn)
            if rep:
                times[name].append(time.perf_counter() - start)
    peer_ms = 1e3 * statistics.median(times["torch.nn"])
    ours_ms = 1e3 * statistics.median(times["rnnkernels.torch"])
    return {"framework": "torch", "size": "B{B} T{T} I{I} H{H}".format(**size), "cell": cell, "layers": layers, "bidirectional": bidirectional,
            "input": "packed" if packed else "padded", "dtype": dtype, "peer": "torch.nn",
            "peer_ms": peer_ms, "ours_ms": ours_ms, "ratio": ours_ms / peer_ms, "max_abs_diff": diff}


def rows(repeats, threads, dtype="float32", cells=CELLS, layers=LAYERS, bidirectional=(False, True),
         inputs=("padded", "packed"), seed=0, size=None, progress=None):
    """Median training-step times of torch.nn's module and ours, one dict per
    case (keys: framework, size, cell, layers, bidirectional, input, dtype, threads,
    peer, peer_ms, ours_ms, ratio, max_abs_diff). ``progress``: a file (such
    as sys.stderr) that gets one line per finished case."""
    import torch

    import rnnkernels
    from .. import torch as rkt

    out = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with rnnkernels.num_threads(threads):
            for cell in cells:
                for n in layers:
                    for bi in bidirectional:
                        for inp in inputs:
                            row = _case(torch, rkt, cell, n, bi, inp == "packed", dtype, repeats, seed,
                                        size or SIZE)
                            row["threads"] = threads
                            out.append(row)
                            if progress is not None:
                                print(f"dropin torch: {cell} {n} layer(s) {'bi' if bi else 'uni'} {inp} "
                                      f"{dtype} {threads}t: ratio {row['ratio']:.2f}x", file=progress, flush=True)
    finally:
        torch.set_num_threads(previous)
    return out


if __name__ == "__main__":  # a quick look: python -m rnnkernels.bench.dropin_torch
    import sys
    from .report import render_dropin
    print(render_dropin(rows(int(sys.argv[1]) if len(sys.argv) > 1 else 3, 2, cells=("lstm", "gru"), layers=(1,),
                             bidirectional=(False,))))
