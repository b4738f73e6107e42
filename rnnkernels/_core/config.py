"""``rnnkernels.show_config()``: how the package was built and what it runs on."""
import os
import platform
import sys

from . import openmp


def config():
    """The build and runtime configuration as a dict (what :func:`show_config` prints)."""
    from .._version import __version__
    from . import blas, threads
    info = {"version": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    try:
        _threads = openmp.load("_threads")
        info["openmp"] = _threads.openmp_enabled()
        info["openmp_max_threads"] = _threads.omp_max_threads()
        info["openmp_wait"] = openmp.wait_setting()
    except ImportError as exc:  # a source checkout that was never built
        info["openmp"] = None
        info["build_error"] = str(exc)
    try:
        from . import cpu, isa, tuning
        facts = cpu.facts()
        info["cpu"] = {"brand": facts.get("brand"), "vendor": facts.get("vendor"), "level": facts.get("level"),
                       "vector_isa": cpu.vector_isa(), "l1d": facts.get("l1d"), "l2": facts.get("l2"),
                       "l3": facts.get("l3")}
        info["isa"] = {"built": list(isa.built()), "available": list(isa.available()), "active": tuning.active()}
        info["plan"] = tuning.current().to_dict() | {"source": tuning.current().source}
        info["plan_line"] = tuning.describe()
    except (ImportError, ValueError) as exc:  # unbuilt checkout, or a bad RNNKERNELS_ISA/PLAN: say so
        info["isa"] = None
        info["isa_error"] = str(exc)
    info["cpus"] = os.cpu_count()
    info["num_threads"] = threads.get_num_threads()
    info["usage"] = threads.usage()
    try:
        info["blas"] = blas.describe()
    except Exception as exc:  # threadpoolctl cannot read a library: say so, do not fail
        info["blas"] = [f"unknown ({exc})"]
    return info


def show_config(file=None):
    """Print the build (OpenMP), the thread settings, the BLAS libraries and
    what the last kernel calls ran on."""
    info = config()
    out = file or sys.stdout
    usage = info["usage"]
    last = usage["last_call"]
    lines = [f"rnnkernels {info['version']} (python {info['python']}, {info['platform']})",
             f"build: OpenMP {'yes' if info['openmp'] else 'no' if info['openmp'] is False else 'unknown'}"
             + (f" (default team {info['openmp_max_threads']}; idle threads: {info['openmp_wait']})"
                if info.get('openmp') else "")
             + (f"; not built: {info['build_error']}" if "build_error" in info else ""),
             (f"CPU: {info['cpu']['brand'] or info['cpu']['vendor']} ({info['cpu']['vector_isa']}, "
              f"x86-64-v{info['cpu']['level']}, L1d {info['cpu']['l1d'] // 1024} KB, L2 {info['cpu']['l2'] // 1024} KB)"
              if info.get("isa") else f"CPU: unknown ({info.get('isa_error')})"),
             (f"kernels: {info['isa']['active']} of built {', '.join(info['isa']['built'])} "
              f"(this CPU runs {', '.join(info['isa']['available'])})" if info.get("isa") else "kernels: unknown"),
             (f"plan: {info['plan_line']}" if info.get("isa") else "plan: unknown"),
             f"threads: {info['num_threads']} (CPUs: {info['cpus']})",
             f"kernel calls: {usage['calls']}, most threads in a time loop: {usage['max_time_loop_threads']}"
             + (f"; last: {last['kernel']} on {last['time_loop_threads']} of {last['threads']} threads"
                if last else "")]
    lines += [f"BLAS: {b}" for b in info["blas"]]
    print("\n".join(lines), file=out)
