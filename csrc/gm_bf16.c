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
    unsigned a = 0, b = 0, c = 0, d = 0;
    __builtin_cpu_init();
    /* libgcc sets these only when the OS saves the zmm state (XCR0) */
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl"))
        return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (int)((a >> 5) & 1u); /* CPUID.(EAX=7,ECX=1):EAX[5] = AVX512_BF16 */
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

#define GM_BF16_CASE(MR, NP)                                                          \
    do {                                                                              \
        __m512 acc[GM_BF16_MR][2];                                                    \
        gm_bf16_tile(a, kp, bp, kp, MR, NP, acc);                                     \
        gm_bf16_store(acc, MR, NP, yt, dout, col0, dout, b, accumulate);              \
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

GM_BF16_TARGET static void gm_bf16_gemm(const uint32_t *xa, size_t n, size_t kp,
                                        const uint32_t *wp, const float *b, size_t dout,
                                        int accumulate, float *y, int nthreads)
{
    size_t panels = (dout + GM_BF16_PANEL - 1) / GM_BF16_PANEL;
    size_t pairs = (panels + 1) / 2;             /* 32-column blocks */
    /* row blocks of 64 rows x column pairs: independent tiles (each output
     * element is computed by exactly one of them, in a fixed order) */
    size_t rb = 64, nrb = (n + rb - 1) / rb;
    long ntiles = (long)(nrb * pairs);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (long t = 0; t < ntiles; t++) {
        size_t jp = (size_t)t % pairs, ib = (size_t)t / pairs;
        size_t col0 = jp * 2 * GM_BF16_PANEL;
        int np = (jp * 2 + 1 < panels) ? 2 : 1;
        const uint32_t *bp = wp + jp * 2 * kp * GM_BF16_PANEL;
        size_t r1 = (ib + 1) * rb < n ? (ib + 1) * rb : n;
        for (size_t r0 = ib * rb; r0 < r1; r0 += GM_BF16_MR) {
            const uint32_t *a = xa + r0 * kp;
            float *yt = y + r0 * dout;
            int mr = (int)(r1 - r0 < GM_BF16_MR ? r1 - r0 : GM_BF16_MR);
            if (np == 2) {
                GM_BF16_ROWS(2)
            } else {
                GM_BF16_ROWS(1)
            }
        }
    }
}


/* ---- attention ---------------------------------------------------------- */

#define GM_BF16_HD GM_BF16_HD_PUBLIC
#define GM_BF16_KB 64   /* keys per block */
#define GM_BF16_QR 4    /* query rows per tile */

/* One query tile (4 rows, bf16 pairs qb[4][32]) against all keys of a head:
 * flash-style, the scores of one 64-key block at a time in registers, online
 * softmax (running max m and sum l per row), o (4 x 64 float32) accumulated
 * with bfloat16 probabilities and values.  kp: keys packed in panels of 16
 * (kp[panel][pair][16]), vp: values packed by channel panel
 * (vp[cpanel][keypair][16]), both zero beyond n. */
GM_BF16_TARGET static void gm_bf16_attn_tile(const uint32_t *qb, const uint32_t *kp,
                                             const uint32_t *vp, size_t n, size_t npad,
                                             float scale, float *o)
{
    const size_t hp = GM_BF16_HD / 2, vstride = npad / 2 * 16;
    float m[GM_BF16_QR], l[GM_BF16_QR];
    uint32_t pb[GM_BF16_QR][GM_BF16_KB / 2];
    for (int r = 0; r < GM_BF16_QR; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(o, 0, sizeof(float) * GM_BF16_QR * GM_BF16_HD);
    for (size_t k0 = 0; k0 < n; k0 += GM_BF16_KB) {
        __m512 s[GM_BF16_QR][4];
        for (int r = 0; r < GM_BF16_QR; r++)
            for (int c = 0; c < 4; c++) s[r][c] = _mm512_setzero_ps();
        const uint32_t *kb = kp + (k0 / 16) * hp * 16;
        for (size_t p = 0; p < hp; p++) {
            __m512bh w[4];
            for (int c = 0; c < 4; c++)
                w[c] = (__m512bh)_mm512_loadu_si512((const void *)(kb + (c * hp + p) * 16));
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
        float corr[GM_BF16_QR];
        for (int r = 0; r < GM_BF16_QR; r++) {
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int c = 0; c < 4; c++) {
                s[r][c] = _mm512_mul_ps(s[r][c], _mm512_set1_ps(scale));
                mx = _mm512_mask_max_ps(mx, valid[c], mx, s[r][c]);
            }
            float mnew = _mm512_reduce_max_ps(mx);
            if (m[r] > mnew) mnew = m[r];
            corr[r] = m[r] == -INFINITY ? 0.0f : expf(m[r] - mnew);
            m[r] = mnew;
            __m512 sum = _mm512_setzero_ps(), pv[4];
            for (int c = 0; c < 4; c++) {
                pv[c] = _mm512_maskz_mov_ps(valid[c],
                                            gm_avx512_exp_ps(_mm512_sub_ps(s[r][c],
                                                                      _mm512_set1_ps(mnew))));
                sum = _mm512_add_ps(sum, pv[c]);
            }
            l[r] = l[r] * corr[r] + _mm512_reduce_add_ps(sum);
            _mm512_storeu_si512((void *)pb[r], (__m512i)_mm512_cvtne2ps_pbh(pv[1], pv[0]));
            _mm512_storeu_si512((void *)(pb[r] + 16),
                                (__m512i)_mm512_cvtne2ps_pbh(pv[3], pv[2]));
        }
        __m512 acc[GM_BF16_QR][4];
        for (int r = 0; r < GM_BF16_QR; r++)
            for (int c = 0; c < 4; c++)
                acc[r][c] = _mm512_mul_ps(_mm512_loadu_ps(o + r * GM_BF16_HD + c * 16),
                                          _mm512_set1_ps(corr[r]));
        const uint32_t *vb = vp + (k0 / 2) * 16;
        size_t nq = (n - k0 >= GM_BF16_KB ? GM_BF16_KB : n - k0 + 1) / 2;
        for (size_t q = 0; q < nq; q++) {
            __m512bh v[4];
            for (int c = 0; c < 4; c++)
                v[c] = (__m512bh)_mm512_loadu_si512((const void *)(vb + c * vstride + q * 16));
            for (int r = 0; r < GM_BF16_QR; r++) {
                __m512bh a = (__m512bh)_mm512_set1_epi32((int)pb[r][q]);
                for (int c = 0; c < 4; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], a, v[c]);
            }
        }
        for (int r = 0; r < GM_BF16_QR; r++)
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(o + r * GM_BF16_HD + c * 16, acc[r][c]);
    }
    for (int r = 0; r < GM_BF16_QR; r++) {
        float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        for (int c = 0; c < GM_BF16_HD; c++) o[r * GM_BF16_HD + c] *= inv;
    }
}

/* Pack one head: q rows to bf16 pairs (nq4 rows, zero beyond n), keys in
 * panels of 16 keys (pairs of channels), values by channel panel (pairs of
 * keys); everything beyond n is zero.  O(npad hd). */
GM_BF16_TARGET static void gm_bf16_attn_pack(const float *qkv, size_t n, size_t ld,
                                             size_t qoff, size_t koff, size_t voff,
                                             size_t nq4, size_t npad, uint32_t *qb,
                                             uint16_t *kp, uint16_t *vp)
{
    const size_t hd = GM_BF16_HD, hp = hd / 2;
    memset(qb, 0, nq4 * hp * sizeof(uint32_t));
    memset(kp, 0, npad * hd * sizeof(uint16_t));
    memset(vp, 0, npad * hd * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        const float *row = qkv + i * ld;
        gm_bf16_row(row + qoff, hd, qb + i * hp);
        size_t panel = i / 16, lane = i % 16;
        for (size_t p = 0; p < hp; p++) {
            uint16_t *o = kp + ((panel * hp + p) * 16 + lane) * 2;
            o[0] = gm_bf16_round(row[koff + 2 * p]);
            o[1] = gm_bf16_round(row[koff + 2 * p + 1]);
        }
        size_t q = i / 2, e = i % 2;
        for (size_t c = 0; c < hd; c++)
            vp[(((c / 16) * (npad / 2) + q) * 16 + c % 16) * 2 + e] =
                gm_bf16_round(row[voff + c]);
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
    size_t nq4 = (n + GM_BF16_QR - 1) / GM_BF16_QR * GM_BF16_QR;
    size_t npad = (n + GM_BF16_KB - 1) / GM_BF16_KB * GM_BF16_KB;
    size_t nh = batch * heads, d = heads * hd, ld = 3 * d;
    size_t qsz = nq4 * hd / 2, ksz = npad * hd;   /* uint32 / uint16 counts */
    uint32_t *qb = (uint32_t *)malloc(nh * qsz * sizeof(uint32_t));
    uint16_t *kv = (uint16_t *)malloc(nh * 2 * ksz * sizeof(uint16_t));
    if (qb == NULL || kv == NULL) {
        free(qb);
        free(kv);
        return GM_ERR_NOMEM;
    }
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (long t = 0; t < (long)nh; t++) {
        size_t b = (size_t)t / heads, h = (size_t)t % heads;
        gm_bf16_attn_pack(qkv + b * n * ld, n, ld, h * hd, d + h * hd, 2 * d + h * hd, nq4,
                          npad, qb + (size_t)t * qsz, kv + (size_t)t * 2 * ksz,
                          kv + (size_t)t * 2 * ksz + ksz);
    }
    size_t tiles = nq4 / GM_BF16_QR;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float o[GM_BF16_QR * GM_BF16_HD];
#pragma omp for schedule(static)
        for (long t = 0; t < (long)(nh * tiles); t++) {
            size_t hh = (size_t)t / tiles, tile = (size_t)t % tiles;
            size_t b = hh / heads, h = hh % heads;
            const uint32_t *kp = (const uint32_t *)(kv + hh * 2 * ksz);
            const uint32_t *vp = (const uint32_t *)(kv + hh * 2 * ksz + ksz);
            gm_bf16_attn_tile(qb + hh * qsz + tile * GM_BF16_QR * (hd / 2), kp, vp, n, npad,
                              scale, o);
            for (size_t r = 0; r < GM_BF16_QR; r++) {
                size_t i = tile * GM_BF16_QR + r;
                if (i >= n) break;
                memcpy(out + (b * n + i) * d + h * hd, o + r * hd, hd * sizeof(float));
            }
        }
    }
    free(qb);
    free(kv);
    return GM_OK;
#else
    (void)qkv; (void)out;
    return GM_ERR_INVALID;
#endif
}


int gm_nn_linear_bf16(const float *x, size_t n, size_t din, const uint16_t *wpack,
                      const float *b, size_t dout, int act, int accumulate, float *y)
{
    if (n == 0 || din == 0 || dout == 0) return GM_ERR_INVALID;
    if (act != GM_NN_ACT_NONE && act != GM_NN_ACT_GELU) return GM_ERR_INVALID;
    if (act == GM_NN_ACT_GELU && accumulate) return GM_ERR_INVALID;
#if GM_HAVE_BF16_KERNEL
    if (!gm_bf16_supported()) return GM_ERR_INVALID;
    int nthreads = gm_get_num_threads();
    size_t kp = (din + 1) / 2;
    uint32_t *xa = (uint32_t *)malloc(n * kp * sizeof(uint32_t) + 64);
    if (xa == NULL) return GM_ERR_NOMEM;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > 64)
    for (long i = 0; i < (long)n; i++) gm_bf16_row(x + (size_t)i * din, din, xa + (size_t)i * kp);
    gm_bf16_gemm(xa, n, kp, (const uint32_t *)wpack, b, dout, accumulate, y, nthreads);
    free(xa);
    if (act == GM_NN_ACT_GELU) gm_nn_gelu_rows_f32(y, n, dout, nthreads);
    return GM_OK;
#else
    (void)x; (void)wpack; (void)b; (void)y;
    return GM_ERR_INVALID;
#endif
}
