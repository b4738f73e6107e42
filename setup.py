"""Build the compiled kernels.

Layering: ``src/*.pyx`` hold the kernels (one cell family per file), with
shared fused-type BLAS wrappers in ``.pxd`` files and C headers for the
point updates, the GEMM and the vectorisable exp.  They compile to
``rnnkernels._core.*``; ``rnnkernels/ops.py`` validates and allocates, the
kernels only compute (rnnkernels/_core/__init__.py).

Environment variables:
    RNNKERNELS_DEBUG=1   build with Cython bounds checks, -O0 -g (for tests
                         under valgrind/ASan and for catching indexing bugs).
    RNNKERNELS_NO_OPENMP=1  build serially even if OpenMP is available.
    RNNKERNELS_PORTABLE=1   no -march=native (for wheels that run on other CPUs).
"""
import glob
import os
import sys
import tempfile
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or ([], []) when the
    compiler cannot build an OpenMP program (we then build serially)."""
    if os.environ.get("RNNKERNELS_NO_OPENMP"):
        return [], []
    if sys.platform == "win32" and compiler.compiler_type == "msvc":
        return ["/openmp"], []
    flags = ["-fopenmp"]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "omp_probe"),
                                     extra_postargs=flags)
        except Exception:  # any compiler/linker failure means no OpenMP
            warnings.warn("OpenMP is not available: rnnkernels will be built "
                          "serially (single-threaded kernels).")
            return [], []
    return flags, flags


def _accepts(compiler, flag):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "flag_probe.c")
        with open(src, "w") as f:
            f.write("int main(void){return 0;}\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    force_rebuild = False

    def build_extensions(self):
        if self.force_rebuild:
            self.force = True
        debug = bool(os.environ.get("RNNKERNELS_DEBUG"))
        omp_c, omp_l = _openmp_flags(self.compiler)
        if debug:
            opt = ["-O0", "-g"]
        elif self.compiler.compiler_type == "msvc":
            opt = ["/O2"]
        else:
            # -O3 vectorises the fused gate loops; no -ffast-math (it would
            # turn on flush-to-zero process-wide and break NaN propagation).
            # -fno-trapping-math lets gcc turn the activations' clamps into
            # vector selects; unlike -ffast-math it changes no result (NaN and
            # Inf still propagate), it only drops support for FP traps.
            opt = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
            if not os.environ.get("RNNKERNELS_PORTABLE") and _accepts(self.compiler, "-march=native"):
                # Vector width of this CPU (AVX2/AVX-512) for the gate loops.
                # Set RNNKERNELS_PORTABLE=1 to build a wheel for other machines.
                opt.append("-march=native")
        for ext in self.extensions:
            ext.extra_compile_args = opt + omp_c
            ext.extra_link_args = omp_l
        super().build_extensions()


def _extensions():
    from Cython.Build import cythonize

    debug = bool(os.environ.get("RNNKERNELS_DEBUG"))
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
        "nonecheck": debug,
    }
    modules = ("_kernels", "_layout", "_threads", "_ctc")
    # The C headers are the kernels' code too: a change to one must rebuild.
    headers = sorted(glob.glob(os.path.join("src", "*.h")) + glob.glob(os.path.join("src", "*.pxd")))
    exts = [
        Extension(f"rnnkernels._core.{m}", [f"src/{m}.pyx"], include_dirs=["src"], depends=headers)
        for m in modules
    ]
    # A debug build must not reuse C files or objects of a release build, nor a
    # portable build the objects of a native one (and vice versa): Cython and
    # build_ext only look at timestamps, not flags.
    mode_file = os.path.join("src", ".build-mode")
    mode = (("debug" if debug else "release") + (" portable" if os.environ.get("RNNKERNELS_PORTABLE") else "")
            + (" serial" if os.environ.get("RNNKERNELS_NO_OPENMP") else ""))
    previous = open(mode_file).read() if os.path.exists(mode_file) else None
    force = previous != mode
    with open(mode_file, "w") as f:
        f.write(mode)
    BuildExt.force_rebuild = force
    return cythonize(exts, include_path=["src"], compiler_directives=directives, force=force)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
