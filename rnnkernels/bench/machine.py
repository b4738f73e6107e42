"""What the machine is: its CPU, thread count and the GEMM peak the work is set against."""
import importlib
import importlib.util
import os
import platform
import time

import numpy as np


def measure_gemm_peak(dtype, threads, n, repeats):
    """Best GFLOP/s of an (n x n) @ (n x n) product on ``threads`` threads,
    by NumPy's BLAS and by the kernels' own GEMM: ``(best, numpy, kernel)``.
    Both count because neither is the machine's limit everywhere: an OpenBLAS
    that does not know a new CPU falls back to older kernels, and elsewhere a
    tuned BLAS may beat ours.  The percentages of peak are of the better one."""
    from threadpoolctl import threadpool_limits
    from .._core.tuning import kernels
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)

    def best_of(product):
        product()  # warm-up: page in, start the threads
        best = float("inf")
        for _ in range(max(3, repeats)):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
        return 2.0 * n ** 3 / best / 1e9

    with threadpool_limits(limits=threads, user_api="blas"):
        numpy_gflops = best_of(lambda: np.matmul(a, b, out=out))
    kernel_gflops = best_of(lambda: kernels().matmul(a, b, out, threads))
    return max(numpy_gflops, kernel_gflops), numpy_gflops, kernel_gflops


def default_threads():
    import rnnkernels
    return rnnkernels.get_num_threads()


def cpu_description(cpuinfo):
    """Model name, family and model, and widest vector ISA of the first CPU in
    a /proc/cpuinfo text.  Machines of the same name differ in vector ISA, so
    every report names it."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE" if flags else None
    out = {"cpu": fields.get("model name"), "cpu_family": fields.get("cpu family"),
           "cpu_model": fields.get("model"), "simd": simd}
    return {k: v for k, v in out.items() if v}


def _cpu_line(m):
    details = ", ".join(part for part in (
        f"family {m['cpu_family']} model {m['cpu_model']}" if m.get("cpu_family") and m.get("cpu_model") else "",
        m.get("simd", "")) if part)
    return (m.get("cpu") or m["processor"]) + (f" ({details})" if details else "")


def cpu_slug(machine):
    """The CPU of a machine_info() dict as a file-name part: "amd-epyc-f26m2-avx512"."""
    import re
    name = re.sub(r"[^a-z0-9]+", "-", (machine.get("cpu") or machine.get("processor") or "cpu").lower())
    family = (f"-f{machine['cpu_family']}m{machine['cpu_model']}"
              if machine.get("cpu_family") and machine.get("cpu_model") else "")
    simd = "-" + re.sub(r"[^a-z0-9]+", "", machine["simd"].lower()) if machine.get("simd") else ""
    return name.strip("-")[:40] + family + simd


def results_name(report):
    """``YYYY-MM-DDTHHMM-<cpu>.json`` for a report: one file per run in benchmarks/results."""
    stamp = report["created"][:16].replace(":", "")
    return f"{stamp}-{cpu_slug(report['machine'])}.json"


def machine_info():
    import rnnkernels
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "rnnkernels": rnnkernels.__version__, "default_threads": default_threads()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info.update(cpu_description(cpuinfo.read()))
    except OSError:
        pass
    from .._core import tuning
    info["kernels"] = tuning.active()
    info["plan"] = tuning.describe()
    if importlib.util.find_spec("torch") is not None:
        import torch
        info["torch"] = torch.__version__
    return info
