"""The cell variants' training steps (``rnnkernels bench --variants``): each
variant's Keras-style training step (one recurrent layer, a softmax head,
Adam) against the plain cell's, and the projection LSTM against
``torch.nn.LSTM(proj_size=P)``'s step of the same model, interleaved, medians.

A training step is what users pay: forward, loss, backward, optimizer, and for
the variants that draw (recurrent dropout, zoneout) their masks."""
import time

import numpy as np

# (name, layer class, layer keyword arguments); each compared with the first
# row of its cell
VARIANT_CASES = [
    ("lstm", "LSTM", {}),
    ("lstm peephole", "LSTM", {"peephole": True}),
    ("lstm zoneout", "LSTM", {"zoneout": (0.1, 0.05)}),
    ("lstm recurrent_dropout", "LSTM", {"recurrent_dropout": 0.25}),
    ("lstm layer_norm", "LSTM", {"layer_norm": True}),
    ("gru", "GRU", {}),
    ("gru zoneout", "GRU", {"zoneout": 0.1}),
    ("gru recurrent_dropout", "GRU", {"recurrent_dropout": 0.25}),
    ("gru layer_norm", "GRU", {"layer_norm": True}),
    ("rnn", "SimpleRNN", {}),
    ("rnn recurrent_dropout", "SimpleRNN", {"recurrent_dropout": 0.25}),
]
# the variants' sizes: the issue's (Keras-style LSTM(128) on T=100, B=32)
VARIANT_SIZE = dict(T=100, B=32, I=40, H=128, classes=10)
PROJECTION_SIZE = dict(T=100, B=32, I=80, H=256, P=128, classes=10)
QUICK = dict(T=8, B=4, I=5, H=16, P=8, classes=3)
# the cost each variant may add to the plain cell's step
LIMITS = {"peephole": 1.2, "zoneout": 1.2, "recurrent_dropout": 1.2, "layer_norm": 1.5}
PROJECTION_VS_TORCH = 0.6


def _ours(layer_name, kw, size, seed):
    from .. import layers
    from ..models import Sequential
    T, I, H = size["T"], size["I"], size["H"]
    layer = getattr(layers, layer_name)(H, input_shape=(T, I), **kw)
    model = Sequential([layer, layers.Dense(size["classes"], activation="softmax")], seed=seed)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((size["B"], T, I)).astype(np.float32)
    y = rng.integers(0, size["classes"], size["B"])
    return lambda: model.train_on_batch(x, y)


def _torch_projection(size, seed, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    T, B, I, H, P = size["T"], size["B"], size["I"], size["H"], size["P"]
    lstm = torch.nn.LSTM(I, H, proj_size=P, batch_first=True)
    head = torch.nn.Linear(P, size["classes"])
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()))
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((B, T, I)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, size["classes"], B))

    def step():
        opt.zero_grad()
        out, (h, _) = lstm(x)
        loss = torch.nn.functional.cross_entropy(head(h[-1]), y)
        loss.backward()
        opt.step()
    return step


def _interleaved(steps, repeats, warmup):
    """{name: median ms}: every step run once per repetition, the order rotated."""
    names = list(steps)
    samples = {n: [] for n in names}
    for _ in range(warmup):
        for n in names:
            steps[n]()
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            steps[n]()  # an untimed pass first: each system in its own steady state
            t0 = time.perf_counter()
            steps[n]()
            samples[n].append((time.perf_counter() - t0) * 1e3)
    return {n: float(np.median(v)) for n, v in samples.items()}


def measure_variants(options, torch_available):
    """The variants' rows and targets, on the options' first thread count."""
    from .._core.threads import num_threads
    threads = options.threads[0]
    size = QUICK if options.quick else VARIANT_SIZE
    psize = QUICK if options.quick else PROJECTION_SIZE
    steps = {name: _ours(layer, kw, size, options.seed) for name, layer, kw in VARIANT_CASES}
    steps["lstm projection"] = _ours("LSTM", {"projection": psize["P"]}, psize, options.seed)
    if torch_available:
        steps["torch lstm proj_size"] = _torch_projection(psize, options.seed, threads)
    with num_threads(threads):
        ms = _interleaved(steps, options.repeats, options.warmup)
    rows, targets = [], []
    for name, _, _ in VARIANT_CASES:
        cell, _, variant = name.partition(" ")
        ratio = ms[name] / ms[cell] if variant else None
        rows.append({"variant": name, "ms": ms[name], "vs_plain": ratio, "vs_torch": None,
                     "size": size, "threads": threads})
        if variant:
            limit = LIMITS[variant]
            targets.append({"name": f"{name} step vs plain {cell}", "goal": f"<= {limit:.2f}x",
                            "measured": round(ratio, 3), "status": "PASS" if ratio <= limit else "FAIL",
                            "detail": f"{ms[name]:.2f} vs {ms[cell]:.2f} ms"})
    vs_torch = ms["lstm projection"] / ms["torch lstm proj_size"] if torch_available else None
    rows.append({"variant": "lstm projection", "ms": ms["lstm projection"], "vs_plain": None,
                 "vs_torch": vs_torch, "size": psize, "threads": threads})
    if torch_available:
        rows.append({"variant": "torch lstm proj_size", "ms": ms["torch lstm proj_size"], "vs_plain": None,
                     "vs_torch": None, "size": psize, "threads": threads})
        targets.append({"name": "lstm projection step vs torch proj_size", "goal": f"<= {PROJECTION_VS_TORCH:.2f}x",
                        "measured": round(vs_torch, 3),
                        "status": "PASS" if vs_torch <= PROJECTION_VS_TORCH else "FAIL",
                        "detail": f"{ms['lstm projection']:.2f} vs {ms['torch lstm proj_size']:.2f} ms"})
    else:
        targets.append({"name": "lstm projection step vs torch proj_size", "goal": f"<= {PROJECTION_VS_TORCH:.2f}x",
                        "measured": None, "status": "SKIP", "detail": "torch is not installed"})
    return rows, targets


def render_variants(rows, format_table):
    if not rows:
        return []
    body = [[r["variant"], "T={T} B={B} I={I} H={H}".format(**r["size"]) + (f" P={r['size']['P']}"
             if "projection" in r["variant"] or "proj_size" in r["variant"] else ""), r["threads"],
             f"{r['ms']:.2f}", "-" if r["vs_plain"] is None else f"{r['vs_plain']:.2f}x",
             "-" if r["vs_torch"] is None else f"{r['vs_torch']:.2f}x"] for r in rows]
    return ["", "cell variants: training step (Keras-style layer + softmax head, Adam), medians",
            format_table(["variant", "size", "thr", "step ms", "vs plain", "vs torch"], body)]
