import time, zlib, numpy as np, rnnkernels
from rnnkernels import ops
rnnkernels.set_num_threads(1)
rng = np.random.default_rng(0)
for T, B, I, H in ((100, 32, 64, 128), (50, 64, 256, 256)):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    w_ih = (rng.standard_normal((4 * H, I)) * .1).astype(np.float32); w_hh = (rng.standard_normal((4 * H, H)) * .1).astype(np.float32)
    times = {"forward+backward": [], "copy of x": [], "crc32 of x (x2: forward and backward)": []}
    for rep in range(15):
        t = time.perf_counter(); y, h, c, cache = ops.lstm_forward(x, w_ih, w_hh, None, None); ops.lstm_backward(cache, np.ones_like(y)); times["forward+backward"].append(time.perf_counter() - t)
        t = time.perf_counter(); x.copy(); times["copy of x"].append(time.perf_counter() - t)
        t = time.perf_counter(); zlib.crc32(x); zlib.crc32(x); times["crc32 of x (x2: forward and backward)"].append(time.perf_counter() - t)
    base = np.median(times["forward+backward"])
    print(f"T={T} B={B} I={I} H={H}: " + "; ".join(f"{k} {np.median(v)*1e3:.3f} ms ({np.median(v)/base:.1%})" for k, v in times.items()))
