"""What this CPU is, as CPUID says (src/_cpu.h): its vector features, its
x86-64 level, its cache sizes.  The kernel build (:mod:`.isa`) and the
tuning defaults (:mod:`.tuning`) are chosen from these, never from the model
number or the brand string, which a virtual machine may misreport.

Off x86 (or where CPUID does not give the caches), the cache sizes come
from the operating system (sysconf, then /sys)."""
import functools
import os

# The vector features that a plan is keyed by: what decides which build runs
# and how wide its registers are (plus the caches, see signature()).
KEY_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd",
                "avx512vnni", "avx512bf16", "avx512fp16", "amx_tile")


def _compiled():
    from . import _cpu
    return _cpu


def _os_cache(name, index_level, index_type):
    """A cache size from sysconf, else from /sys (0 when neither says)."""
    try:
        value = os.sysconf(name)
        if value and value > 0:
            return int(value)
    except (ValueError, OSError, AttributeError):
        pass
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            folder = os.path.join(base, entry)
            with open(os.path.join(folder, "level")) as f:
                level = int(f.read())
            with open(os.path.join(folder, "type")) as f:
                kind = f.read().strip()
            if level == index_level and kind in index_type:
                with open(os.path.join(folder, "size")) as f:
                    text = f.read().strip().upper()
                scale = {"K": 1024, "M": 1024 ** 2}.get(text[-1:], 1)
                return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return 0


@functools.lru_cache(maxsize=1)
def facts():
    """CPUID's answers (a dict; see src/_cpu.pyx ``read``), with the cache
    sizes filled in from the OS where CPUID gave none."""
    out = dict(_compiled().read())
    fallback = {"l1d": ("SC_LEVEL1_DCACHE_SIZE", 1, ("Data", "Unified")),
                "l2": ("SC_LEVEL2_CACHE_SIZE", 2, ("Unified", "Data")),
                "l3": ("SC_LEVEL3_CACHE_SIZE", 3, ("Unified", "Data"))}
    for key, (name, level, kinds) in fallback.items():
        if not out.get(key):
            out[key] = _os_cache(name, level, kinds)
    out["line"] = out.get("line") or 64
    return out


def native_features():
    """The features the ``native`` kernel build needs (empty without one)."""
    return _compiled().native_features()


def vector_isa():
    """The widest vector instruction set, as a word for people."""
    f = facts()
    return "AVX-512" if f.get("avx512f") else "AVX2" if f.get("avx2") else "SSE" if f.get("sse2") else "other"


def signature():
    """What a tuned plan is keyed by: the vendor, the vector features and the
    cache sizes (two CPUs that agree on these get the same choices)."""
    f = facts()
    features = "+".join(name for name in KEY_FEATURES if f.get(name))
    return f"{f['vendor'] or 'cpu'}-{features or 'scalar'}-l1d{f['l1d'] // 1024}k-l2{f['l2'] // 1024}k-l3{f['l3'] // 1048576}m"
