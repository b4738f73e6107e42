/* What this CPU can run and how large its caches are, read from CPUID (and
 * XGETBV for what the operating system saves across context switches).
 *
 * Compiled with the compiler's default flags, never for a wider ISA: this is
 * the code that decides which build of the kernels may load, so it must run
 * on every x86-64 CPU.  Its own reading rather than __builtin_cpu_supports,
 * whose names and x86-64-vN levels vary between compilers and versions; the
 * tests check the two agree where the compiler has both.
 *
 * Elsewhere (arm64, ...) every answer is "no" / 0 and the caller falls back
 * to the generic build and the operating system's cache sizes.
 */
#ifndef RK_CPU_H
#define RK_CPU_H
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define RK_CPU_X86 1
#include <cpuid.h>
#endif

typedef struct {
    char vendor[13];
    char brand[49];
    unsigned family, model, stepping;
    /* leaf 1 */
    int sse2, sse3, ssse3, sse4_1, sse4_2, popcnt, cx16, movbe, fma, f16c, avx;
    /* leaf 7 */
    int bmi1, bmi2, avx2, avx512f, avx512dq, avx512cd, avx512bw, avx512vl, avx512ifma,
        avx512vbmi, avx512vbmi2, avx512vnni, avx512bitalg, avx512vpopcntdq, avx512bf16,
        avx512fp16, avxvnni, amx_tile, amx_bf16, amx_int8;
    /* leaf 0x80000001 */
    int lahf, lzcnt, sse4a;
    /* what the OS saves: the AVX (ymm) and AVX-512 (opmask, zmm) states */
    int os_avx, os_avx512;
    /* bytes: level 1 data, level 2, level 3 (0: unknown) and a cache line */
    long l1d, l2, l3, line;
} rk_cpu_facts;

#ifdef RK_CPU_X86
static unsigned long long rk_xgetbv0(void)
{
    unsigned eax, edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));  /* xgetbv */
    return ((unsigned long long)edx << 32) | eax;
}

/* Deterministic cache parameters (Intel leaf 4, AMD leaf 0x8000001D): the
 * size of the data or unified cache of each level. */
static void rk_cache_leaf(unsigned leaf, rk_cpu_facts* f)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned a, b, c, d;
        __cpuid_count(leaf, i, a, b, c, d);
        unsigned type = a & 0x1f, level = (a >> 5) & 0x7;
        if (type == 0)
            break;
        if (type == 2)  /* instructions only */
            continue;
        long line = (long)(b & 0xfff) + 1;
        long size = ((long)(b >> 22) + 1) * ((long)((b >> 12) & 0x3ff) + 1) * line * ((long)c + 1);
        if (level == 1) { f->l1d = size; f->line = line; }
        else if (level == 2) f->l2 = size;
        else if (level == 3) f->l3 = size;
    }
}
#endif

static void rk_cpu_read(rk_cpu_facts* f)
{
    memset(f, 0, sizeof(*f));
#ifdef RK_CPU_X86
    unsigned a, b, c, d, max_leaf, max_ext;
    __cpuid(0, max_leaf, b, c, d);
    memcpy(f->vendor, &b, 4);
    memcpy(f->vendor + 4, &d, 4);
    memcpy(f->vendor + 8, &c, 4);
    if (max_leaf >= 1) {
        __cpuid(1, a, b, c, d);
        unsigned base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
        f->family = base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family;
        f->model = base_family == 0x6 || base_family == 0xf ? base_model + (((a >> 16) & 0xf) << 4) : base_model;
        f->stepping = a & 0xf;
        f->sse2 = (d >> 26) & 1;
        f->sse3 = c & 1;
        f->ssse3 = (c >> 9) & 1;
        f->fma = (c >> 12) & 1;
        f->cx16 = (c >> 13) & 1;
        f->sse4_1 = (c >> 19) & 1;
        f->sse4_2 = (c >> 20) & 1;
        f->movbe = (c >> 22) & 1;
        f->popcnt = (c >> 23) & 1;
        f->f16c = (c >> 29) & 1;
        f->avx = (c >> 28) & 1;
        if ((c >> 27) & 1) {  /* OSXSAVE: XGETBV says which register states the OS saves */
            unsigned long long xcr0 = rk_xgetbv0();
            f->os_avx = (xcr0 & 0x6) == 0x6;
            f->os_avx512 = f->os_avx && (xcr0 & 0xe0) == 0xe0;
        }
    }
    if (max_leaf >= 7) {
        unsigned max_sub;
        __cpuid_count(7, 0, max_sub, b, c, d);
        f->bmi1 = (b >> 3) & 1;
        f->avx2 = (b >> 5) & 1;
        f->bmi2 = (b >> 8) & 1;
        f->avx512f = (b >> 16) & 1;
        f->avx512dq = (b >> 17) & 1;
        f->avx512ifma = (b >> 21) & 1;
        f->avx512cd = (b >> 28) & 1;
        f->avx512bw = (b >> 30) & 1;
        f->avx512vl = (b >> 31) & 1;
        f->avx512vbmi = (c >> 1) & 1;
        f->avx512vbmi2 = (c >> 6) & 1;
        f->avx512vnni = (c >> 11) & 1;
        f->avx512bitalg = (c >> 12) & 1;
        f->avx512vpopcntdq = (c >> 14) & 1;
        f->amx_bf16 = (d >> 22) & 1;
        f->avx512fp16 = (d >> 23) & 1;
        f->amx_tile = (d >> 24) & 1;
        f->amx_int8 = (d >> 25) & 1;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            f->avxvnni = (a >> 4) & 1;
            f->avx512bf16 = (a >> 5) & 1;
        }
    }
    __cpuid(0x80000000, max_ext, b, c, d);
    int topoext = 0;
    if (max_ext >= 0x80000001) {
        __cpuid(0x80000001, a, b, c, d);
        f->lahf = c & 1;
        f->lzcnt = (c >> 5) & 1;
        f->sse4a = (c >> 6) & 1;
        topoext = (c >> 22) & 1;
    }
    if (max_ext >= 0x80000004) {
        unsigned* brand = (unsigned*)f->brand;
        for (unsigned i = 0; i < 3; i++)
            __cpuid(0x80000002 + i, brand[4 * i], brand[4 * i + 1], brand[4 * i + 2], brand[4 * i + 3]);
        f->brand[48] = 0;
    }
    /* The vector states count only where the OS saves them (a VM may hide them). */
    if (!f->os_avx)
        f->avx = f->avx2 = f->fma = f->f16c = 0;
    if (!f->os_avx512)
        f->avx512f = f->avx512dq = f->avx512cd = f->avx512bw = f->avx512vl = f->avx512ifma = f->avx512vbmi =
            f->avx512vbmi2 = f->avx512vnni = f->avx512bitalg = f->avx512vpopcntdq = f->avx512bf16 =
            f->avx512fp16 = 0;
    if (strcmp(f->vendor, "GenuineIntel") == 0 && max_leaf >= 4)
        rk_cache_leaf(4, f);
    else if (topoext && max_ext >= 0x8000001d)
        rk_cache_leaf(0x8000001d, f);
    else if (max_ext >= 0x80000006) {  /* AMD's older leaves */
        __cpuid(0x80000005, a, b, c, d);
        f->l1d = (long)(c >> 24) * 1024;
        f->line = c & 0xff;
        __cpuid(0x80000006, a, b, c, d);
        f->l2 = (long)(c >> 16) * 1024;
        f->l3 = (long)(d >> 18) * 512 * 1024;
    }
#endif
}

/* The x86-64 micro-architecture levels the kernel builds are compiled for
 * (-march=x86-64-v2, -v3, -v4): 0 where a level is missing. */
static int rk_cpu_level(const rk_cpu_facts* f)
{
    int v2 = f->sse3 && f->ssse3 && f->sse4_1 && f->sse4_2 && f->popcnt && f->cx16 && f->lahf;
    int v3 = v2 && f->avx && f->avx2 && f->bmi1 && f->bmi2 && f->f16c && f->fma && f->lzcnt && f->movbe;
    int v4 = v3 && f->avx512f && f->avx512bw && f->avx512cd && f->avx512dq && f->avx512vl;
    return v4 ? 4 : v3 ? 3 : v2 ? 2 : f->sse2 ? 1 : 0;
}

/* The compiler's own answer, for the tests (-1: this compiler cannot say). */
static int rk_cpu_level_builtin(void)
{
#if defined(RK_CPU_X86) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    if (__builtin_cpu_supports("x86-64-v3")) return 3;
    if (__builtin_cpu_supports("x86-64-v2")) return 2;
    return 1;
#else
    return -1;
#endif
}
#endif
