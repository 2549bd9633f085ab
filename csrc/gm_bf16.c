/* gm_bf16.c -- linear layers with bfloat16 inputs and float32 accumulation
 * (the opt-in reduced-precision path of the DINOv2 backbone).
 *
 * y (n x dout) = act(bf16(x) bf16(w)^T + b)  [or y += ... when accumulate]
 *
 * x is float32 and rounded to bfloat16 (round to nearest even) on the fly;
 * w is packed once by the caller (gm_bf16_pack_weight).  Products of two
 * bfloat16 values are exact in float32; the sums run in float32 with
 * AVX512_BF16's VDPBF16PS (two products added per lane and step, so the
 * summation order is pairs of k in increasing order).  Every output element
 * is computed by one thread in the same order whatever the thread count, so
 * results do not depend on it.
 *
 * The kernels are compiled for AVX512-BF16 with function target attributes
 * and only run after gm_bf16_supported() said the CPU has it; elsewhere the
 * entry points return GM_ERR_INVALID. */
#include "geomatch.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && \
    (__GNUC__ >= 10 || (defined(__clang__) && __clang_major__ >= 11))
#define GM_HAVE_BF16_KERNEL 1
#include <cpuid.h>
#include "gm_avx512.h" /* gm_avx512_exp_ps */
#define GM_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define GM_HAVE_BF16_KERNEL 0
#endif

/* Output columns per packed panel (one zmm of float32). */
#define GM_BF16_PANEL 16
/* Head dimension of gm_nn_attention_bf16. */
#define GM_BF16_HD_PUBLIC 64
/* Rows per micro-tile. */
#define GM_BF16_MR 8

int gm_bf16_supported(void)
{
#if GM_HAVE_BF16_KERNEL
    /* asked once: every bf16 call checks, and CPUID leaves the virtual
     * machine (about 5 us a call here, 0.4% of a ViT-S bf16 forward) */
    static int known = -1;
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (v >= 0) return v;
    unsigned a = 0, b = 0, c = 0, d = 0;
    __builtin_cpu_init();
    /* libgcc sets these only when the OS saves the zmm state (XCR0) */
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl"))
        v = 0;
    else if (!__get_cpuid_count(7, 1, &a, &b, &c, &d))
        v = 0;
    else
        v = (int)((a >> 5) & 1u); /* CPUID.(EAX=7,ECX=1):EAX[5] = AVX512_BF16 */
    __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    return v;
#else
    return 0;
#endif
}

/* bfloat16 of a float, round to nearest even (NaN kept a quiet NaN). */
static inline uint16_t gm_bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

size_t gm_bf16_packed_size(size_t din, size_t dout)
{
    size_t kp = (din + 1) / 2;
    size_t panels = (dout + GM_BF16_PANEL - 1) / GM_BF16_PANEL;
    return panels * kp * GM_BF16_PANEL * 2;
}

/* Layout: panel j (output columns 16j..16j+15), k-pair p, lane l holds
 * (w[16j+l][2p], w[16j+l][2p+1]) as two bfloat16 (low half first); missing
 * columns and an odd din's last k are zero.  O(din dout). */
int gm_bf16_pack_weight(const float *w, size_t din, size_t dout, uint16_t *out)
{
    if (din == 0 || dout == 0) return GM_ERR_INVALID;
    size_t kp = (din + 1) / 2;
    size_t panels = (dout + GM_BF16_PANEL - 1) / GM_BF16_PANEL;
    for (size_t j = 0; j < panels; j++)
        for (size_t p = 0; p < kp; p++)
            for (size_t l = 0; l < GM_BF16_PANEL; l++) {
                size_t col = j * GM_BF16_PANEL + l;
                uint16_t *o = out + ((j * kp + p) * GM_BF16_PANEL + l) * 2;
                for (size_t e = 0; e < 2; e++) {
                    size_t k = 2 * p + e;
                    o[e] = (col < dout && k < din) ? gm_bf16_round(w[col * din + k]) : 0;
                }
            }
    return GM_OK;
}

#if GM_HAVE_BF16_KERNEL

/* One row of x (din floats) to kp bf16 pairs (din padded with zero). */
GM_BF16_TARGET static void gm_bf16_row(const float *x, size_t din, uint32_t *out)
{
    size_t k = 0;
    for (; k + 32 <= din; k += 32) {
        __m512 lo = _mm512_loadu_ps(x + k), hi = _mm512_loadu_ps(x + k + 16);
        _mm512_storeu_si512((void *)(out + k / 2), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    uint16_t *o = (uint16_t *)(out + k / 2);
    for (; k < din; k++) *o++ = gm_bf16_round(x[k]);
    if (din & 1) *o = 0;
}

/* The micro-tile: mr (<= 8) rows x np (1 or 2) panels, all k.  Accumulates
 * into acc; inlined with constant mr/np so acc lives in registers. */
GM_BF16_TARGET static inline __attribute__((always_inline)) void
gm_bf16_tile(const uint32_t *a, size_t lda, const uint32_t *bp, size_t kp, int mr, int np,
             __m512 acc[GM_BF16_MR][2])
{
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < np; c++) acc[r][c] = _mm512_setzero_ps();
    const uint32_t *b1 = bp + kp * GM_BF16_PANEL;
    for (size_t p = 0; p < kp; p++) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(bp + p * GM_BF16_PANEL));
        __m512bh w1 = w0;
        if (np == 2) w1 = (__m512bh)_mm512_loadu_si512((const void *)(b1 + p * GM_BF16_PANEL));
        for (int r = 0; r < mr; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r * lda + p]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, w0);
            if (np == 2) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, w1);
        }
    }
}

/* Epilogue of one tile: y = acc + b (act/accumulate) on columns col0.. */
GM_BF16_TARGET static inline __attribute__((always_inline)) void
gm_bf16_store(__m512 acc[GM_BF16_MR][2], int mr, int np, float *y, size_t ldy, size_t col0,
              size_t dout, const float *b, int accumulate)
{
    for (int c = 0; c < np; c++) {
        size_t col = col0 + (size_t)c * GM_BF16_PANEL;
        if (col >= dout) break;
        size_t left = dout - col;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
        __m512 bv = b ? _mm512_maskz_loadu_ps(m, b + col) : _mm512_setzero_ps();
        for (int r = 0; r < mr; r++) {
            float *yr = y + (size_t)r * ldy + col;
            __m512 v = _mm512_add_ps(acc[r][c], bv);
            if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, yr), v);
            _mm512_mask_storeu_ps(yr, m, v);
        }
    }
}

/* One tile into yt (ld ldy, columns ycol.. below ylim, bias yb, yacc:
 * accumulate), names of the caller's scope. */
#define GM_BF16_CASE(MR, NP)                                                          \
    do {                                                                              \
        __m512 acc[GM_BF16_MR][2];                                                    \
        gm_bf16_tile(a, kp, bp, kp, MR, NP, acc);                                     \
        gm_bf16_store(acc, MR, NP, yt, ldy, ycol, ylim, yb, yacc);                    \
    } while (0)

/* One tile of mr (1..8, a compile-time constant in each case) rows by NP panels. */
#define GM_BF16_ROWS(NP)                                                              \
    switch (mr) {                                                                     \
    case 8: GM_BF16_CASE(8, NP); break;                                               \
    case 7: GM_BF16_CASE(7, NP); break;                                               \
    case 6: GM_BF16_CASE(6, NP); break;                                               \
    case 5: GM_BF16_CASE(5, NP); break;                                               \
    case 4: GM_BF16_CASE(4, NP); break;                                               \
    case 3: GM_BF16_CASE(3, NP); break;                                               \
    case 2: GM_BF16_CASE(2, NP); break;                                               \
    default: GM_BF16_CASE(1, NP); break;                                              \
    }

/* The bf16 epilogue of one 32-column tile of rows [r0, r1): tmp holds
 * (r1 - r0) x 32 floats acc + b; GELU (when act) over them with the one
 * GELU function, then rounded to bfloat16 (nearest even) into y16 (ld
 * dout).  O(rows). */
GM_BF16_TARGET static void gm_bf16_store16(float *tmp, size_t rows, int act, uint16_t *y16,
                                           size_t dout, size_t col0)
{
    if (act == GM_NN_ACT_GELU) gm_nn_gelu_f32(tmp, rows * 2 * GM_BF16_PANEL);
    for (size_t r = 0; r < rows; r++) {
        const float *t = tmp + r * 2 * GM_BF16_PANEL;
        uint16_t *o = y16 + r * dout + col0;
        __m256bh lo = _mm512_cvtneps_pbh(_mm512_loadu_ps(t));
        __m256bh hi = _mm512_cvtneps_pbh(_mm512_loadu_ps(t + GM_BF16_PANEL));
        _mm256_storeu_si256((__m256i *)o, (__m256i)lo);
        _mm256_storeu_si256((__m256i *)(o + GM_BF16_PANEL), (__m256i)hi);
    }
}

GM_BF16_TARGET static int gm_bf16_gemm(const uint32_t *xa, size_t n, size_t kp,
                                       const uint32_t *wp, const float *b, size_t dout,
                                       int accumulate, float *y, int nthreads, int act,
                                       uint16_t *y16)
{
    size_t panels = (dout + GM_BF16_PANEL - 1) / GM_BF16_PANEL;
    size_t pairs = (panels + 1) / 2;             /* 32-column blocks */
    /* row blocks x column pairs: independent tiles (each output element is
     * computed by exactly one of them, in a fixed order, so the blocking
     * does not change any value).  A row block's activations take about
     * 384 KB (in the 1 MB L2 beside a panel pair), so the weights stream
     * from the outer caches once per row block: ceil(n / rb) times per
     * call; blocks of equal size (multiples of GM_BF16_MR rows) keep the
     * threads' shares even. */
    size_t rbmax = (384u << 10) / (kp * 4 > 0 ? kp * 4 : 1);
    rbmax = rbmax < GM_BF16_MR ? GM_BF16_MR : (rbmax > 512 ? 512 : rbmax);
    size_t nrb = (n + rbmax - 1) / rbmax;
    size_t rb = (n + nrb - 1) / nrb;
    rb = (rb + GM_BF16_MR - 1) / GM_BF16_MR * GM_BF16_MR;
    nrb = (n + rb - 1) / rb;
    long ntiles = (long)(nrb * pairs);
    int fail = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        /* bf16 output: each tile's rows x 32 floats go through tmp (this
         * thread's), then GELU and the rounding (gm_bf16_store16) */
        float *tmp = y16 ? (float *)aligned_alloc(64, rb * 2 * GM_BF16_PANEL * sizeof(float))
                         : NULL;
        if (y16 && !tmp) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (long t = 0; t < ntiles; t++) {
            size_t jp = (size_t)t % pairs, ib = (size_t)t / pairs;
            size_t col0 = jp * 2 * GM_BF16_PANEL;
            int np = (jp * 2 + 1 < panels) ? 2 : 1;
            const uint32_t *bp = wp + jp * 2 * kp * GM_BF16_PANEL;
            size_t r1 = (ib + 1) * rb < n ? (ib + 1) * rb : n;
            if (y16 && !tmp) continue;
            /* bf16 output: the tile's rows go to tmp (ld 32, its columns from
             * 0, no accumulation); float32: straight into y */
            const size_t ldy = y16 ? 2 * GM_BF16_PANEL : dout;
            const size_t ycol = y16 ? 0 : col0, ylim = y16 ? 2 * GM_BF16_PANEL : dout;
            const float *yb = y16 && b ? b + col0 : b;
            const int yacc = y16 ? 0 : accumulate;
            for (size_t r0 = ib * rb; r0 < r1; r0 += GM_BF16_MR) {
                const uint32_t *a = xa + r0 * kp;
                int mr = (int)(r1 - r0 < GM_BF16_MR ? r1 - r0 : GM_BF16_MR);
                float *yt = y16 ? tmp + (r0 - ib * rb) * ldy : y + r0 * dout;
                if (np == 2) {
                    GM_BF16_ROWS(2)
                } else {
                    GM_BF16_ROWS(1)
                }
            }
            if (y16) gm_bf16_store16(tmp, r1 - ib * rb, act, y16 + ib * rb * dout, dout, col0);
        }
        free(tmp);
    }
    return fail ? GM_ERR_NOMEM : GM_OK;
}


/* ---- peak ---------------------------------------------------------------- */

#if GM_HAVE_BF16_KERNEL
/* Register-only VDPBF16PS loop: 16 independent accumulator chains (the
 * instruction's latency is several cycles on two pipes), `iters` iterations. */
GM_BF16_TARGET static float gm_bf16_peak_loop(long iters)
{
    __m512 acc[16];
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);  /* (1.0, 1.0) */
    __m512bh y = (__m512bh)_mm512_set1_epi32(0x33d633d6);  /* (1e-7, 1e-7) */
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
        __asm__ volatile("" : "+v"(x)); /* keep the loop from being folded */
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    }
    for (int i = 1; i < 16; i++) acc[0] = _mm512_add_ps(acc[0], acc[i]);
    return _mm512_reduce_add_ps(acc[0]);
}
#endif

/* VDPBF16PS zmm peak of the calling thread: GFLOP/s (per lane and
 * instruction two bfloat16 products and two additions = 4 flops, 16 lanes)
 * of the best of `reps` runs of a register-only loop of `iters` iterations
 * of 16 independent VDPBF16PS.  GM_ERR_INVALID (negative) without
 * AVX512_BF16 or for bad counts. */
double gm_bf16_peak_gflops(long iters, int reps)
{
#if GM_HAVE_BF16_KERNEL
    if (iters < 1 || reps < 1 || !gm_bf16_supported()) return (double)GM_ERR_INVALID;
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int r = 0; r < reps; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        sink += gm_bf16_peak_loop(iters);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double t = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double g = 4.0 * 16.0 * 16.0 * (double)iters / t * 1e-9;
        if (g > best) best = g;
    }
    (void)sink;
    return best;
#else
    (void)iters; (void)reps;
    return (double)GM_ERR_INVALID;
#endif
}

/* ---- attention ---------------------------------------------------------- */

#define GM_BF16_HD GM_BF16_HD_PUBLIC
#define GM_BF16_KB 64   /* keys per block */
#define GM_BF16_QR 6    /* query rows per tile */

/* Keeps a loaded vector in a register: without it GCC folds the load into
 * every VDPBF16PS that uses it (one load per row instead of one per tile),
 * which makes the loops load-bound (as in gm_attention.c's gm_fa_tile). */
#define GM_BF16_IN_REGISTER(v) __asm__("" : "+v"(v))

/* e^x for x <= 0 (a score minus its row's maximum), for probabilities that
 * are rounded to bfloat16 next (relative rounding error up to 2^-9): x
 * clamped at -87, e^x = 2^n e^r with |r| <= ln2 / 2 and a degree-4 Taylor
 * polynomial of e^r (relative error below 5e-5, against 2e-3 for the
 * rounding to bfloat16).  A NaN lane gives a finite value (the caller
 * tests for NaN itself). */
GM_BF16_TARGET static inline __attribute__((always_inline)) __m512 gm_bf16_exp_nonpos(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147180559945f), x);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24), r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* One query tile (6 rows, bf16 pairs qb[6][32], already multiplied by the
 * softmax scale) against all keys of a head: flash-style, the scores of one
 * 64-key block at a time in registers (6 x 4 zmm), online softmax in
 * float32 (running max m per row; a 16-lane running sum l per row, folded
 * once at the end; the output rescaled only when the maximum grows), o (6 x
 * 64 float32) accumulated with bfloat16 probabilities and values.  kp: keys
 * packed in panels of 16 (kp[panel][pair][16]), vp: values packed by channel
 * panel (vp[cpanel][keypair][16]), both zero beyond n.  Writes the nr real
 * rows to out (row stride ldo).  A row whose scores hold a NaN is NaN. */
GM_BF16_TARGET static void gm_bf16_attn_tile(const uint32_t *qb, const uint32_t *kp,
                                             const uint32_t *vp, size_t n, size_t npad,
                                             size_t nr, float *out, size_t ldo)
{
    const size_t hp = GM_BF16_HD / 2, vstride = npad / 2 * 16;
    float m[GM_BF16_QR], corr[GM_BF16_QR];
    uint32_t pb[GM_BF16_QR][GM_BF16_KB / 2] __attribute__((aligned(64)));
    float o[GM_BF16_QR][GM_BF16_HD] __attribute__((aligned(64)));
    __m512 lv[GM_BF16_QR];
    __mmask16 bad[GM_BF16_QR];
    for (int r = 0; r < GM_BF16_QR; r++) {
        m[r] = -INFINITY;
        lv[r] = _mm512_setzero_ps();
        bad[r] = 0;
        for (int c = 0; c < GM_BF16_HD; c++) o[r][c] = 0.0f;
    }
    for (size_t k0 = 0; k0 < n; k0 += GM_BF16_KB) {
        __m512 s[GM_BF16_QR][4];
        for (int r = 0; r < GM_BF16_QR; r++)
            for (int c = 0; c < 4; c++) s[r][c] = _mm512_setzero_ps();
        const uint32_t *kb = kp + (k0 / 16) * hp * 16;
        for (size_t p = 0; p < hp; p++) {
            __m512bh w[4];
            for (int c = 0; c < 4; c++) {
                w[c] = (__m512bh)_mm512_load_si512((const void *)(kb + (c * hp + p) * 16));
                GM_BF16_IN_REGISTER(w[c]);
            }
            for (int r = 0; r < GM_BF16_QR; r++) {
                __m512bh a = (__m512bh)_mm512_set1_epi32((int)qb[r * hp + p]);
                for (int c = 0; c < 4; c++) s[r][c] = _mm512_dpbf16_ps(s[r][c], a, w[c]);
            }
        }
        __mmask16 valid[4];
        for (int c = 0; c < 4; c++) {
            size_t k = k0 + (size_t)c * 16;
            valid[c] = k >= n ? 0 : (n - k >= 16 ? (__mmask16)0xffff
                                                 : (__mmask16)((1u << (n - k)) - 1u));
        }
        const int full = n - k0 >= GM_BF16_KB; /* no masks needed */
        for (int r = 0; r < GM_BF16_QR; r++) {
            __m512 mx;
            if (full)
                mx = _mm512_max_ps(_mm512_max_ps(s[r][0], s[r][1]),
                                   _mm512_max_ps(s[r][2], s[r][3]));
            else {
                mx = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid[0], s[r][0]);
                for (int c = 1; c < 4; c++) mx = _mm512_mask_max_ps(mx, valid[c], mx, s[r][c]);
            }
            __m512 mv = _mm512_set1_ps(m[r]), pv[4];
            corr[r] = 1.0f;
            /* the horizontal maximum only when a lane exceeds the running one */
            if (_mm512_cmp_ps_mask(mx, mv, _CMP_GT_OQ)) {
                float bm = _mm512_reduce_max_ps(mx);
                corr[r] = m[r] == -INFINITY ? 0.0f : expf(m[r] - bm);
                m[r] = bm;
                mv = _mm512_set1_ps(bm);
            }
            for (int c = 0; c < 4; c++) {
                __m512 x = _mm512_sub_ps(s[r][c], mv);
                bad[r] |= full ? _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q)
                               : _mm512_mask_cmp_ps_mask(valid[c], x, x, _CMP_UNORD_Q);
                pv[c] = gm_bf16_exp_nonpos(x);
                if (!full) pv[c] = _mm512_maskz_mov_ps(valid[c], pv[c]);
            }
            __m512 sum = _mm512_add_ps(_mm512_add_ps(pv[0], pv[1]), _mm512_add_ps(pv[2], pv[3]));
            if (corr[r] != 1.0f) lv[r] = _mm512_mul_ps(lv[r], _mm512_set1_ps(corr[r]));
            lv[r] = _mm512_add_ps(lv[r], sum);
            _mm512_store_si512((void *)pb[r], (__m512i)_mm512_cvtne2ps_pbh(pv[1], pv[0]));
            _mm512_store_si512((void *)(pb[r] + 16), (__m512i)_mm512_cvtne2ps_pbh(pv[3], pv[2]));
        }
        __m512 acc[GM_BF16_QR][4];
        for (int r = 0; r < GM_BF16_QR; r++) {
            __m512 cr = _mm512_set1_ps(corr[r]);
            for (int c = 0; c < 4; c++)
                acc[r][c] = _mm512_mul_ps(_mm512_load_ps(o[r] + c * 16), cr);
        }
        const uint32_t *vb = vp + (k0 / 2) * 16;
        size_t nq = (n - k0 >= GM_BF16_KB ? GM_BF16_KB : n - k0 + 1) / 2;
        for (size_t q = 0; q < nq; q++) {
            __m512bh v[4];
            for (int c = 0; c < 4; c++) {
                v[c] = (__m512bh)_mm512_load_si512((const void *)(vb + c * vstride + q * 16));
                GM_BF16_IN_REGISTER(v[c]);
            }
            for (int r = 0; r < GM_BF16_QR; r++) {
                __m512bh a = (__m512bh)_mm512_set1_epi32((int)pb[r][q]);
                for (int c = 0; c < 4; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], a, v[c]);
            }
        }
        for (int r = 0; r < GM_BF16_QR; r++)
            for (int c = 0; c < 4; c++) _mm512_store_ps(o[r] + c * 16, acc[r][c]);
    }
    for (size_t r = 0; r < nr; r++) {
        float l = _mm512_reduce_add_ps(lv[r]);
        __m512 inv = _mm512_set1_ps(bad[r] ? NAN : (l > 0 ? 1.0f / l : 0.0f));
        for (int c = 0; c < 4; c++)
            _mm512_storeu_ps(out + r * ldo + c * 16, _mm512_mul_ps(_mm512_load_ps(o[r] + c * 16), inv));
    }
}

/* Pack one head: q rows times `scale` (1/8 for head dimension 64, a power
 * of two, so exact) to bf16 pairs (nq rows, zero beyond n), keys in panels
 * of 16 keys (pairs of channels), values by channel panel (pairs of keys);
 * everything beyond n is zero.  Rounding to nearest even (VCVTNEPS2BF16).
 * O(npad hd). */
GM_BF16_TARGET static void gm_bf16_attn_pack(const float *qkv, size_t n, size_t ld,
                                             size_t qoff, size_t koff, size_t voff, size_t nq,
                                             size_t npad, float scale, uint32_t *qb,
                                             uint32_t *kp, uint32_t *vp)
{
    const size_t hd = GM_BF16_HD, hp = hd / 2;
    const __m512 sv = _mm512_set1_ps(scale);
    memset(qb + n * hp, 0, (nq - n) * hp * sizeof(uint32_t));
    memset(kp + n / 16 * 16 * hp, 0, (npad - n / 16 * 16) * hp * sizeof(uint32_t));
    memset(vp, 0, npad * hp * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        const float *row = qkv + i * ld;
        uint32_t *qd = qb + i * hp;
        for (size_t c = 0; c < hd; c += 32)
            _mm512_storeu_si512((void *)(qd + c / 2),
                                (__m512i)_mm512_cvtne2ps_pbh(
                                    _mm512_mul_ps(_mm512_loadu_ps(row + qoff + c + 16), sv),
                                    _mm512_mul_ps(_mm512_loadu_ps(row + qoff + c), sv)));
        uint32_t kr[GM_BF16_HD / 2] __attribute__((aligned(64)));
        for (size_t c = 0; c < hd; c += 32)
            _mm512_store_si512((void *)(kr + c / 2),
                               (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + koff + c + 16),
                                                            _mm512_loadu_ps(row + koff + c)));
        uint32_t *kd = kp + i / 16 * 16 * hp + i % 16;
        for (size_t p = 0; p < hp; p++) kd[p * 16] = kr[p];
    }
    /* values: two keys per 32-bit lane (key 2q low, 2q + 1 high) */
    for (size_t i = 0; i < n; i += 2) {
        const float *r0 = qkv + i * ld + voff, *r1 = r0 + ld;
        for (size_t c = 0; c < hd; c += 16) {
            __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r0 + c)));
            __m512i hi = i + 1 < n ? _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(
                                         _mm512_loadu_ps(r1 + c)))
                                   : _mm512_setzero_si512();
            _mm512_store_si512((void *)(vp + ((c / 16) * (npad / 2) + i / 2) * 16),
                               _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

#endif /* GM_HAVE_BF16_KERNEL */

int gm_nn_attention_bf16(const float *qkv, size_t batch, size_t n, size_t heads, size_t hd,
                         float *out)
{
    if (batch == 0 || n == 0 || heads == 0 || hd != GM_BF16_HD_PUBLIC) return GM_ERR_INVALID;
#if GM_HAVE_BF16_KERNEL
    if (!gm_bf16_supported()) return GM_ERR_INVALID;
    int nthreads = gm_get_num_threads();
    if (n > ((size_t)1 << 31) || batch > SIZE_MAX / heads) return GM_ERR_INVALID;
    size_t nq = (n + GM_BF16_QR - 1) / GM_BF16_QR * GM_BF16_QR;
    size_t npad = (n + GM_BF16_KB - 1) / GM_BF16_KB * GM_BF16_KB;
    size_t nh = batch * heads, d = heads * hd, ld = 3 * d, hp = hd / 2;
    /* per head, in uint32 (bf16 pairs): q (nq x 32), k and v (npad x 32) */
    size_t qsz = nq * hp, ksz = npad * hp, per = qsz + 2 * ksz;
    per = (per + 15) / 16 * 16; /* keep every head's k and v 64-byte aligned */
    qsz = per - 2 * ksz;
    if (nh > SIZE_MAX / sizeof(uint32_t) / per) return GM_ERR_NOMEM;
    uint32_t *buf = (uint32_t *)aligned_alloc(64, nh * per * sizeof(uint32_t));
    if (buf == NULL) return GM_ERR_NOMEM;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (long t = 0; t < (long)nh; t++) {
        size_t b = (size_t)t / heads, h = (size_t)t % heads;
        uint32_t *hb = buf + (size_t)t * per;
        gm_bf16_attn_pack(qkv + b * n * ld, n, ld, h * hd, d + h * hd, 2 * d + h * hd, nq, npad,
                          scale, hb + 2 * ksz, hb, hb + ksz);
    }
    size_t tiles = nq / GM_BF16_QR;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nthreads) if (nthreads > 1)
    for (long t = 0; t < (long)(nh * tiles); t++) {
        size_t hh = (size_t)t / tiles, tile = (size_t)t % tiles;
        size_t b = hh / heads, h = hh % heads, r0 = tile * GM_BF16_QR;
        const uint32_t *hb = buf + hh * per;
        size_t nr = n - r0 < GM_BF16_QR ? n - r0 : GM_BF16_QR;
        gm_bf16_attn_tile(hb + 2 * ksz + r0 * hp, hb, hb + ksz, n, npad, nr,
                          out + (b * n + r0) * d + h * hd, d);
    }
    free(buf);
    return GM_OK;
#else
    (void)qkv; (void)out;
    return GM_ERR_INVALID;
#endif
}


int gm_nn_linear_bf16(const float *x, size_t n, size_t din, const uint16_t *wpack,
                      const float *b, size_t dout, int act, int accumulate, float *y)
{
    return gm_nn_linear_bf16_io(x, NULL, n, din, wpack, b, dout, act, accumulate, y, NULL);
}

int gm_nn_linear_bf16_io(const float *x, const uint16_t *x16, size_t n, size_t din,
                         const uint16_t *wpack, const float *b, size_t dout, int act,
                         int accumulate, float *y, uint16_t *y16)
{
    if (n == 0 || din == 0 || dout == 0) return GM_ERR_INVALID;
    if (act != GM_NN_ACT_NONE && act != GM_NN_ACT_GELU) return GM_ERR_INVALID;
    if (act == GM_NN_ACT_GELU && accumulate) return GM_ERR_INVALID;
    if ((x16 && din % 2) || (!x16 && !x) || (y16 && (accumulate || dout % 32)) ||
        (!y16 && !y))
        return GM_ERR_INVALID;
#if GM_HAVE_BF16_KERNEL
    if (!gm_bf16_supported()) return GM_ERR_INVALID;
    int nthreads = gm_get_num_threads(), st;
    size_t kp = (din + 1) / 2;
    uint32_t *xa = NULL;
    if (!x16) {
        xa = (uint32_t *)malloc(n * kp * sizeof(uint32_t) + 64);
        if (xa == NULL) return GM_ERR_NOMEM;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > 64)
        for (long i = 0; i < (long)n; i++)
            gm_bf16_row(x + (size_t)i * din, din, xa + (size_t)i * kp);
    }
    st = gm_bf16_gemm(x16 ? (const uint32_t *)x16 : xa, n, kp, (const uint32_t *)wpack, b,
                      dout, accumulate, y, nthreads, act, y16);
    free(xa);
    if (st == GM_OK && !y16 && act == GM_NN_ACT_GELU) gm_nn_gelu_rows_f32(y, n, dout, nthreads);
    return st;
#else
    (void)x; (void)x16; (void)wpack; (void)b; (void)y; (void)y16;
    return GM_ERR_INVALID;
#endif
}
