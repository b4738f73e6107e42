"""CPUID, as rnnkernels/_core/cpu.py reads it: the features, the x86-64
level, the caches (src/_cpu.h).  Built with the compiler's default flags so
that it runs on any CPU: it is what decides which kernel build may load."""

cdef extern from "_cpu.h":
    ctypedef struct rk_cpu_facts:
        char vendor[13]
        char brand[49]
        unsigned family, model, stepping
        int sse2, sse3, ssse3, sse4_1, sse4_2, popcnt, cx16, movbe, fma, f16c, avx
        int bmi1, bmi2, avx2, avx512f, avx512dq, avx512cd, avx512bw, avx512vl, avx512ifma
        int avx512vbmi, avx512vbmi2, avx512vnni, avx512bitalg, avx512vpopcntdq, avx512bf16
        int avx512fp16, avxvnni, amx_tile, amx_bf16, amx_int8
        int lahf, lzcnt, sse4a
        int os_avx, os_avx512
        long l1d, l2, l3, line
    void rk_cpu_read(rk_cpu_facts* f)
    int rk_cpu_level(const rk_cpu_facts* f)
    int rk_cpu_level_builtin()

cdef extern from *:
    """
    #ifndef RK_NATIVE_FEATURES
    #define RK_NATIVE_FEATURES ""
    #endif
    static const char* rk_native_features(void) { return RK_NATIVE_FEATURES; }
    """
    const char* rk_native_features()


def read():
    """CPUID's answers as a dict: vendor, brand, family/model/stepping, one
    flag per feature (only those the OS saves the registers of), level (the
    x86-64-vN level: 0 off x86, 1 the baseline), l1d/l2/l3/line in bytes (0
    where CPUID does not say)."""
    cdef rk_cpu_facts f
    rk_cpu_read(&f)
    facts = dict(f)
    facts["vendor"] = f.vendor.decode("ascii", "replace")
    facts["brand"] = f.brand.decode("ascii", "replace").strip()
    facts["level"] = rk_cpu_level(&f)
    return facts


def compiler_level():
    """The x86-64 level by the compiler's __builtin_cpu_supports (-1 when it
    cannot say): a second opinion for the tests."""
    return rk_cpu_level_builtin()


def native_features():
    """The CPU features a ``RNNKERNELS_NATIVE=1`` build of the kernels was
    compiled to use (empty when there is no such build)."""
    return tuple(rk_native_features().decode("ascii").split())
