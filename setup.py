"""Build the compiled kernels.

Layering: ``src/_kernels.pxi`` and the C headers it includes hold the kernels
(the time-loop skeleton, the cells' point updates, the GEMM kernel, the
vectorisable activations); ``rnnkernels/ops.py`` validates and allocates, the
kernels only compute (rnnkernels/_core/__init__.py).

One build for every CPU: the kernels are compiled once per instruction set
(``ISAS`` below) into ``rnnkernels._core._kernels_<isa>``, and
``rnnkernels/_core/isa.py`` loads the widest one this CPU runs, as read from
CPUID by ``_cpu`` (compiled for the baseline, so that it runs everywhere).
The other modules hold no hot loop and take the compiler's default flags:
``pip install .`` and ``pip wheel .`` make the same portable binary on any
x86-64 machine.

Environment variables:
    RNNKERNELS_DEBUG=1      build with Cython bounds checks, -O0 -g (for tests
                            under valgrind/ASan and for catching indexing bugs).
    RNNKERNELS_NO_OPENMP=1  build serially even if OpenMP is available.
    RNNKERNELS_NATIVE=1     also build the kernels for this machine's CPU
                            (-march=native); they load only on a CPU with every
                            feature they were compiled for.
"""
import glob
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The kernel builds, widest first: name -> (flags, what it needs).  x86-64-v4
# is AVX-512 F/BW/CD/DQ/VL, v3 AVX2+FMA (Haswell, Zen 1), v2 SSE4.2+POPCNT
# (Nehalem): the levels the psABI defines, so "needs" is a CPUID check
# (src/_cpu.h).  -mtune=generic: tuned for no vendor's core.
X86_ISAS = {
    "avx512": ["-march=x86-64-v4", "-mtune=generic"],
    "avx2": ["-march=x86-64-v3", "-mtune=generic"],
    "baseline": ["-march=x86-64-v2", "-mtune=generic"],
}
# Off x86 one build, for what the compiler targets by default.
OTHER_ISAS = {"generic": []}
NATIVE_FLAGS = ["-march=native"]
# The preprocessor macros of -march=native's features, as src/_cpu.h names them.
FEATURE_MACROS = {
    "__SSE4_2__": "sse4_2", "__POPCNT__": "popcnt", "__AVX__": "avx", "__AVX2__": "avx2", "__FMA__": "fma",
    "__F16C__": "f16c", "__BMI__": "bmi1", "__BMI2__": "bmi2", "__LZCNT__": "lzcnt", "__MOVBE__": "movbe",
    "__AVX512F__": "avx512f", "__AVX512DQ__": "avx512dq", "__AVX512CD__": "avx512cd",
    "__AVX512BW__": "avx512bw", "__AVX512VL__": "avx512vl", "__AVX512IFMA__": "avx512ifma",
    "__AVX512VBMI__": "avx512vbmi", "__AVX512VBMI2__": "avx512vbmi2", "__AVX512VNNI__": "avx512vnni",
    "__AVX512BITALG__": "avx512bitalg", "__AVX512VPOPCNTDQ__": "avx512vpopcntdq",
    "__AVX512BF16__": "avx512bf16", "__AVX512FP16__": "avx512fp16", "__AVXVNNI__": "avxvnni",
    "__SSE4A__": "sse4a",
}


def _x86():
    return platform.machine().lower() in ("x86_64", "amd64")


def _native():
    return bool(os.environ.get("RNNKERNELS_NATIVE"))


def isas():
    """The kernel builds of this build: name -> compile flags."""
    table = dict(X86_ISAS if _x86() else OTHER_ISAS)
    if _native():
        table = {"native": NATIVE_FLAGS, **table}
    return table


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


def _native_features(compiler):
    """The features -march=native turns on here (its predefined macros)."""
    cc = compiler.compiler_so[0] if getattr(compiler, "compiler_so", None) else "cc"
    try:
        out = subprocess.run([cc, "-march=native", "-dM", "-E", "-x", "c", os.devnull],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"RNNKERNELS_NATIVE=1: {cc} cannot tell what -march=native enables ({exc})") from exc
    macros = set(re.findall(r"#define (__\w+__) ", out))
    return sorted(FEATURE_MACROS[m] for m in macros if m in FEATURE_MACROS)


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
        table = isas()
        for ext in self.extensions:
            isa = ext.name.rsplit("_", 1)[-1] if ext.name.startswith(
                tuple(f"rnnkernels._core.{family}_" for family in FAMILIES)) else None
            ext.extra_compile_args = opt + (table[isa] if isa else []) + omp_c
            ext.extra_link_args = omp_l
            if ext.name == "rnnkernels._core._cpu" and "native" in table:
                features = " ".join(_native_features(self.compiler))
                ext.define_macros = [("RK_NATIVE_FEATURES", f'"{features}"')]
        super().build_extensions()


# Each kernel build is a module of its own: a two-line .pyx that includes the
# one source, generated here (its module name must be the file's).
SHIM = '''# Generated by setup.py: {family} compiled for {isa} ({flags}).
ISA = "{isa}"
include "{family}.pxi"
'''
# The sources compiled once per instruction set: the recurrent kernels, the CTC
# loss and the keyed masks.
FAMILIES = ("_kernels", "_ctc", "_keyed")


def _kernel_shims(table):
    """(family, isa) -> the generated .pyx of that build."""
    folder = os.path.join("build", "isa")
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for family in FAMILIES:
        for isa, flags in table.items():
            path = os.path.join(folder, f"{family}_{isa}.pyx")
            text = SHIM.format(family=family, isa=isa, flags=" ".join(flags) or "the compiler's defaults")
            if not os.path.exists(path) or open(path).read() != text:  # keep its timestamp when unchanged
                with open(path, "w") as f:
                    f.write(text)
            paths[family, isa] = path
    return paths


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
    # The C headers are the kernels' code too: a change to one must rebuild.
    headers = sorted(glob.glob(os.path.join("src", "*.h")) + glob.glob(os.path.join("src", "*.pxd"))
                     + glob.glob(os.path.join("src", "*.pxi")))
    table = isas()
    exts = [Extension(f"rnnkernels._core.{family}_{isa}", [path], include_dirs=["src"], depends=headers)
            for (family, isa), path in _kernel_shims(table).items()]
    exts += [Extension(f"rnnkernels._core.{m}", [f"src/{m}.pyx"], include_dirs=["src"], depends=headers)
             for m in ("_layout", "_threads", "_cpu")]
    # A debug build must not reuse C files or objects of a release build, nor
    # a serial build those of an OpenMP one: Cython and build_ext only look at
    # timestamps, not flags.
    mode_file = os.path.join("src", ".build-mode")
    mode = " ".join(["debug" if debug else "release", *table]
                    + (["serial"] if os.environ.get("RNNKERNELS_NO_OPENMP") else []))
    previous = open(mode_file).read() if os.path.exists(mode_file) else None
    force = previous != mode
    with open(mode_file, "w") as f:
        f.write(mode)
    BuildExt.force_rebuild = force
    return cythonize(exts, include_path=["src"], compiler_directives=directives, force=force)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
