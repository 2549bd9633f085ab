/* gm_sgemm_avx512.c -- geomatch's own float32 GEMM for CPUs with AVX-512F,
 * chosen at run time by gm_gemm_f32 and gm_nn_linear_f32 (GEOMATCH_SGEMM,
 * gm_sgemm_set_mode), and the register-only FMA loop that measures the
 * machine's float32 FMA peak (gm_fma_peak_gflops).
 *
 * C = alpha op(A) op(B) + beta C, row-major, any transposes and strides.
 * GotoBLAS/BLIS structure: op(B) is packed once into column panels of
 * GM_SG_NR = 32 columns (two zmm) for each block of k; op(A) into row
 * micro-panels of GM_SG_MR = 14 rows, one block of k at a time, per thread;
 * the micro-kernel keeps a 14 x 32 tile of C in 28 zmm accumulators and
 * adds, per k, two loaded B vectors times 14 broadcast A values.  Missing
 * rows/columns are zero in the packed panels; column edges are written with
 * masked stores, row edges by storing only the real rows.
 *
 * Summation order: k is cut into ceil(k / GM_SG_KC) blocks of equal length
 * (up to one), a function of k alone; each block is summed in registers in
 * increasing k from zero and then added to C (the first block writes
 * alpha acc + beta C, or alpha acc without reading C when beta == 0).  So
 * every element of C gets the same operations whatever the row/column
 * blocks, the threads or the thread count: results are identical for any
 * thread count (and for any split of the product by a caller).
 *
 * The kernels are compiled for AVX-512 with function target attributes
 * (gm_avx512.h's GM_AVX512_TARGET) and run only after
 * gm_sgemm_avx512_supported() (gm_avx512_supported(): AVX-512 F, BW, VL and
 * DQ, every AVX-512 CPU since Skylake-SP, and the OS's zmm state) said
 * so; the extension still loads and runs elsewhere, on BLAS. */
#include "geomatch.h"
#include "gm_parallel.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gm_avx512.h"

#if GM_HAVE_AVX512
#define GM_HAVE_SG_KERNEL 1
#define GM_SG_TARGET GM_AVX512_TARGET
#define GM_AVX2_TARGET __attribute__((target("avx2,fma")))
#else
#define GM_HAVE_SG_KERNEL 0
#endif

#define GM_SG_MR 14        /* rows of the register tile */
#define GM_SG_NR 32        /* columns of the register tile (two zmm) */
#define GM_SG_KC 384       /* longest block of k (B micro-panel 48 KB, in L1) */
#define GM_SG_MC_TILES 12  /* row tiles per block of A (168 x 384 floats, in L2) */
#define GM_SG_NC_PANELS 16 /* column panels per unit of work */

static int gm_sgemm_mode = GM_SGEMM_AUTO;

int gm_sgemm_avx512_supported(void)
{
#if GM_HAVE_SG_KERNEL
    return gm_avx512_supported(); /* F, BW, VL, DQ and the OS's zmm state */
#else
    return 0;
#endif
}

int gm_avx2_supported(void)
{
#if GM_HAVE_SG_KERNEL
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int gm_sgemm_set_mode(int mode)
{
    if (mode != GM_SGEMM_AUTO && mode != GM_SGEMM_AVX512 && mode != GM_SGEMM_BLAS)
        return GM_ERR_INVALID;
    if (mode == GM_SGEMM_AVX512 && !gm_sgemm_avx512_supported()) return GM_ERR_INVALID;
    gm_sgemm_mode = mode;
    return GM_OK;
}

int gm_sgemm_get_mode(void) { return gm_sgemm_mode; }

int gm_sgemm_uses_avx512(void)
{
    static int supported = -1;
    if (gm_sgemm_mode == GM_SGEMM_BLAS) return 0;
    if (supported < 0) supported = gm_sgemm_avx512_supported();
    return supported;
}

#if GM_HAVE_SG_KERNEL

/* Block lengths of k: nkb blocks of kcb (the last one shorter), from k alone. */
static void gm_sg_kblocks(size_t k, size_t *nkb, size_t *kcb)
{
    size_t nb = (k + GM_SG_KC - 1) / GM_SG_KC;
    *nkb = nb;
    *kcb = (k + nb - 1) / nb;
}

/* Transpose a block: rows 0..h-1 (h <= 16) of src (row stride lds), columns
 * 0..w-1 (w <= 16), to dst[q ldd + r] for q < w and r in the store mask
 * (rows h..15 read as zero).  Standard 16 x 16 in-register transpose. */
GM_SG_TARGET static inline void gm_sg_transpose16(const float *src, size_t lds, size_t h,
                                                  size_t w, float *dst, size_t ldd,
                                                  __mmask16 store)
{
    __mmask16 lm = (__mmask16)(w >= 16 ? 0xffffu : (1u << w) - 1u);
    __m512 r[16], t[16], u[16], v[16];
    for (int i = 0; i < 16; i++)
        r[i] = (size_t)i < h ? _mm512_maskz_loadu_ps(lm, src + (size_t)i * lds)
                             : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int g = 0; g < 16; g += 8)
        for (int i = 0; i < 4; i++) {
            v[g + i] = _mm512_shuffle_f32x4(u[g + i], u[g + 4 + i], 0x88);
            v[g + 4 + i] = _mm512_shuffle_f32x4(u[g + i], u[g + 4 + i], 0xdd);
        }
    for (int q = 0; q < 8; q++) {
        __m512 lo = _mm512_shuffle_f32x4(v[q], v[q + 8], 0x88);  /* column q */
        __m512 hi = _mm512_shuffle_f32x4(v[q], v[q + 8], 0xdd);  /* column q + 8 */
        if ((size_t)q < w) _mm512_mask_storeu_ps(dst + (size_t)q * ldd, store, lo);
        if ((size_t)q + 8 < w) _mm512_mask_storeu_ps(dst + (size_t)(q + 8) * ldd, store, hi);
    }
}

/* Pack columns j0..j0+32 of op(B), rows p0..p0+kc, into dst (kc x 32, zero
 * beyond n).  op(B)[p][j] = b[p ldb + j], or b[j ldb + p] when trans_b. */
GM_SG_TARGET static void gm_sg_pack_b(int trans_b, const float *b, size_t ldb, size_t p0,
                                      size_t kc, size_t j0, size_t n, float *restrict dst)
{
    size_t w = n - j0 < GM_SG_NR ? n - j0 : GM_SG_NR;
    if (!trans_b) {
        __mmask16 m0 = (__mmask16)(w >= 16 ? 0xffffu : (1u << w) - 1u);
        __mmask16 m1 = (__mmask16)(w <= 16 ? 0u : w >= 32 ? 0xffffu : (1u << (w - 16)) - 1u);
        for (size_t p = 0; p < kc; p++) {
            const float *src = b + (p0 + p) * ldb + j0;
            _mm512_store_ps(dst + p * GM_SG_NR, _mm512_maskz_loadu_ps(m0, src));
            _mm512_store_ps(dst + p * GM_SG_NR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
        }
    } else {
        /* 16 columns (rows of b) x 16 values of k at a time, transposed */
        for (size_t p = 0; p < kc; p += 16) {
            size_t wp = kc - p < 16 ? kc - p : 16;
            for (size_t half = 0; half < 2; half++) {
                size_t c0 = half * 16, hh = w > c0 ? (w - c0 < 16 ? w - c0 : 16) : 0;
                gm_sg_transpose16(b + (j0 + c0) * ldb + p0 + p, ldb, hh, wp,
                                  dst + p * GM_SG_NR + c0, GM_SG_NR, 0xffff);
            }
        }
    }
}

/* Pack rows i0..i0+14 of op(A), columns p0..p0+kc, into dst (kc x 14, rows
 * beyond m zero).  op(A)[i][p] = a[i lda + p], or a[p lda + i] when trans_a. */
GM_SG_TARGET static void gm_sg_pack_a(int trans_a, const float *a, size_t lda, size_t i0,
                                      size_t m, size_t p0, size_t kc, float *restrict dst)
{
    size_t h = m - i0 < GM_SG_MR ? m - i0 : GM_SG_MR;
    if (!trans_a) {
        /* 14 rows x 16 values of k at a time, transposed (rows >= h zero) */
        for (size_t p = 0; p < kc; p += 16)
            gm_sg_transpose16(a + i0 * lda + p0 + p, lda, h, kc - p < 16 ? kc - p : 16,
                              dst + p * GM_SG_MR, GM_SG_MR, (__mmask16)((1u << GM_SG_MR) - 1u));
    } else {
        __mmask16 hm = (__mmask16)((1u << h) - 1u), st = (__mmask16)((1u << GM_SG_MR) - 1u);
        for (size_t p = 0; p < kc; p++)
            _mm512_mask_storeu_ps(dst + p * GM_SG_MR, st,
                                  _mm512_maskz_loadu_ps(hm, a + (p0 + p) * lda + i0));
    }
}

/* The micro-kernel: the 14 x 32 tile of C at c (rows h <= 14, columns by
 * masks m0/m1) gets alpha sum_p a[p][r] b[p][:], over kc values of k; with
 * first, C = alpha acc + beta C (C not read when beta == 0), else
 * C = alpha acc + C. */
GM_SG_TARGET static void gm_sg_kernel(size_t kc, const float *restrict ap,
                                      const float *restrict bp, float *c, size_t ldc, size_t h,
                                      __mmask16 m0, __mmask16 m1, float alpha, float beta,
                                      int first)
{
    __m512 acc[GM_SG_MR][2];
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    /* the C tile arrives in cache while the sums run */
    for (size_t r = 0; r < h; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 31), _MM_HINT_T0);
    }
    for (size_t p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 14
        for (int r = 0; r < GM_SG_MR; r++) {
            __m512 av = _mm512_set1_ps(ap[r]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
        ap += GM_SG_MR;
        bp += GM_SG_NR;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) {
        if ((size_t)r >= h) break;
        float *cr = c + (size_t)r * ldc;
        __m512 t0, t1;
        if (!first) {
            t0 = _mm512_fmadd_ps(va, acc[r][0], _mm512_maskz_loadu_ps(m0, cr));
            t1 = _mm512_fmadd_ps(va, acc[r][1], _mm512_maskz_loadu_ps(m1, cr + 16));
        } else if (beta == 0.0f) {
            t0 = _mm512_mul_ps(va, acc[r][0]);
            t1 = _mm512_mul_ps(va, acc[r][1]);
        } else {
            t0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), _mm512_mul_ps(va, acc[r][0]));
            t1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16),
                                 _mm512_mul_ps(va, acc[r][1]));
        }
        _mm512_mask_storeu_ps(cr, m0, t0);
        _mm512_mask_storeu_ps(cr + 16, m1, t1);
    }
}

/* C = beta C for alpha == 0 (A and B not read; beta == 0 writes zeros). */
static void gm_sg_scale(size_t m, size_t n, float beta, float *c, size_t ldc)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

static void *gm_sg_alloc(size_t nfloats)
{
    size_t bytes = (nfloats * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

int gm_sgemm_avx512(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                    size_t ldc)
{
    if (m == 0 || n == 0 || k == 0) return GM_ERR_INVALID;
    if (lda < (trans_a ? m : k) || ldb < (trans_b ? k : n) || ldc < n) return GM_ERR_INVALID;
    if (!gm_sgemm_avx512_supported()) return GM_ERR_INVALID;
    if (m > SIZE_MAX / 4 / n || k > SIZE_MAX / 4 / (n + GM_SG_NR)) return GM_ERR_INVALID;
    if (alpha == 0.0f) {
        gm_sg_scale(m, n, beta, c, ldc);
        return GM_OK;
    }
    size_t nkb, kcb;
    gm_sg_kblocks(k, &nkb, &kcb);
    size_t npan = (n + GM_SG_NR - 1) / GM_SG_NR;
    size_t mtiles = (m + GM_SG_MR - 1) / GM_SG_MR;
    /* Units of work: mct row tiles x ncp column panels; their shape only
     * balances the threads (results do not depend on it). */
    int nt = gm_threads_for(GM_WORK_FMA * (double)m * (double)n * (double)k);
#ifdef _OPENMP
    if (omp_in_parallel()) nt = 1; /* called per block from a caller's region */
#endif
    size_t mct = GM_SG_MC_TILES, ncp = GM_SG_NC_PANELS;
    if (mct > mtiles) mct = mtiles;
    if (ncp > npan) ncp = npan;
    for (;;) {
        size_t units = ((mtiles + mct - 1) / mct) * ((npan + ncp - 1) / ncp);
        if (units >= 4 * (size_t)nt || (mct == 1 && ncp == 1)) break;
        if (ncp >= mct && ncp > 1) ncp = (ncp + 1) / 2;
        else mct = (mct + 1) / 2;
    }
    size_t nrb = (mtiles + mct - 1) / mct, ncb = (npan + ncp - 1) / ncp;
    size_t units = nrb * ncb;
    if ((size_t)nt > units) nt = (int)units;
    float *bpack = gm_sg_alloc(npan * GM_SG_NR * k);
    float *apack = gm_sg_alloc((size_t)nt * mct * GM_SG_MR * kcb);
    if (bpack == NULL || apack == NULL) {
        free(bpack);
        free(apack);
        return GM_ERR_NOMEM;
    }
    long npan_l = (long)npan, units_l = (long)units;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        /* B: for block kb (rows p0..p0+kc), panel jp at (p0 npan + jp kc) 32 */
#pragma omp for schedule(static)
        for (long jp = 0; jp < npan_l; jp++)
            for (size_t kb = 0; kb < nkb; kb++) {
                size_t p0 = kb * kcb, kc = k - p0 < kcb ? k - p0 : kcb;
                gm_sg_pack_b(trans_b, b, ldb, p0, kc, (size_t)jp * GM_SG_NR, n,
                             bpack + (p0 * npan + (size_t)jp * kc) * GM_SG_NR);
            }
        float *ap = apack + (size_t)gm_thread_id() * mct * GM_SG_MR * kcb;
#pragma omp for schedule(dynamic, 1)
        for (long u = 0; u < units_l; u++) {
            size_t t0 = (size_t)u / ncb * mct, t1 = t0 + mct < mtiles ? t0 + mct : mtiles;
            size_t q0 = (size_t)u % ncb * ncp, q1 = q0 + ncp < npan ? q0 + ncp : npan;
            for (size_t kb = 0; kb < nkb; kb++) {
                size_t p0 = kb * kcb, kc = k - p0 < kcb ? k - p0 : kcb;
                for (size_t t = t0; t < t1; t++)
                    gm_sg_pack_a(trans_a, a, lda, t * GM_SG_MR, m, p0, kc,
                                 ap + (t - t0) * GM_SG_MR * kc);
                for (size_t jp = q0; jp < q1; jp++) {
                    const float *bp = bpack + (p0 * npan + jp * kc) * GM_SG_NR;
                    size_t j0 = jp * GM_SG_NR, w = n - j0 < GM_SG_NR ? n - j0 : GM_SG_NR;
                    __mmask16 m0 = (__mmask16)(w >= 16 ? 0xffffu : (1u << w) - 1u);
                    __mmask16 m1 =
                        (__mmask16)(w <= 16 ? 0u : w >= 32 ? 0xffffu : (1u << (w - 16)) - 1u);
                    for (size_t t = t0; t < t1; t++) {
                        size_t i0 = t * GM_SG_MR, h = m - i0 < GM_SG_MR ? m - i0 : GM_SG_MR;
                        gm_sg_kernel(kc, ap + (t - t0) * GM_SG_MR * kc, bp, c + i0 * ldc + j0,
                                     ldc, h, m0, m1, alpha, beta, kb == 0);
                    }
                }
            }
        }
    }
    free(bpack);
    free(apack);
    return GM_OK;
}

/* ---- C = alpha A B^T with B read in place (gm_sgemm_avx512_abt) ----
 *
 * The same products as gm_sgemm_avx512(0, 1, ...), computed transposed:
 * C^T (n x m) = B (n x k, row-major, read in place) A^T.  Tiles of
 * GM_SG_MR = 14 rows of B times 32 (or 16) columns of A^T: per k, the tile's
 * 14 B values are broadcast straight from B's rows (no packing, no
 * transpose of B) against one or two vectors of A^T, packed once per call
 * into panels of 32 columns (the last one 16 wide when at most 16 columns
 * are left).  Each element of C gets exactly gm_sg_kernel's operations: the
 * same k blocks (gm_sg_kblocks), each summed by FMAs in increasing k from
 * zero (a b and b a are the same product), the first block written as
 * alpha acc, the next ones as alpha acc + C; so C is bit for bit the packed
 * GEMM's with beta == 0 (finite inputs; the order of a and b in the FMA
 * could only change which NaN payload propagates).  A tile's sums across
 * the k blocks go through a small 14 x 32 buffer, written to C transposed
 * (gm_sg_transpose16) once the last block is in.  Work in units of two
 * tiles (28 rows of B): for each panel, all k blocks of the unit's tiles
 * (the unit's rows, 86 KB at k = 768, stay in L1/L2 across the panels); a
 * 16-wide panel takes both tiles in one kernel (28 accumulators: one panel
 * load per 28 FMAs; the 14-row one needs a load per 14 and runs about 15%
 * slower); during the first panel the next unit's rows are prefetched into
 * L2.  The last tile, when B has fewer rows, is copied with zero rows below
 * (the kernels read 14 rows).  On one Zen 5 core (2026-12-01): 80 x 1369 x
 * 768 at 250 GFLOP/s against 175 for the packed GEMM, which spends a third
 * of its time transposing B. */

/* Tile t (14 x 32, row stride 32) of C^T over kc values of k: B's 14 rows at
 * x (row stride ldx), A^T's packed panel bp (kc x 32); t = alpha acc when
 * first, else alpha acc + t.  The first 14 rows at pf (row stride ldx),
 * this block's part, are prefetched into L2 unless pf is NULL. */
GM_SG_TARGET static void gm_sg_kernel_bt32(size_t kc, const float *x, size_t ldx,
                                           const float *restrict bp, float *restrict t,
                                           float alpha, int first, const float *pf)
{
    __m512 acc[GM_SG_MR][2];
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t p0 = 0; p0 < kc; p0 += 16) {
        size_t pe = kc - p0 < 16 ? kc : p0 + 16;
        if (pf)
            for (int r = 0; r < GM_SG_MR; r++)
                _mm_prefetch((const char *)(pf + (size_t)r * ldx + p0), _MM_HINT_T1);
        for (size_t p = p0; p < pe; p++) {
            __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 14
            for (int r = 0; r < GM_SG_MR; r++) {
                __m512 av = _mm512_set1_ps(x[(size_t)r * ldx + p]);
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
            bp += 32;
        }
    }
    __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) {
        float *tr = t + r * 32;
        if (first) {
            _mm512_store_ps(tr, _mm512_mul_ps(va, acc[r][0]));
            _mm512_store_ps(tr + 16, _mm512_mul_ps(va, acc[r][1]));
        } else {
            _mm512_store_ps(tr, _mm512_fmadd_ps(va, acc[r][0], _mm512_load_ps(tr)));
            _mm512_store_ps(tr + 16, _mm512_fmadd_ps(va, acc[r][1], _mm512_load_ps(tr + 16)));
        }
    }
}

/* The same for a 16-column panel (kc x 16) and tile (14 x 16, stride 16). */
GM_SG_TARGET static void gm_sg_kernel_bt16(size_t kc, const float *x, size_t ldx,
                                           const float *restrict bp, float *restrict t,
                                           float alpha, int first, const float *pf)
{
    __m512 acc[GM_SG_MR];
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) acc[r] = _mm512_setzero_ps();
    for (size_t p0 = 0; p0 < kc; p0 += 16) {
        size_t pe = kc - p0 < 16 ? kc : p0 + 16;
        if (pf)
            for (int r = 0; r < GM_SG_MR; r++)
                _mm_prefetch((const char *)(pf + (size_t)r * ldx + p0), _MM_HINT_T1);
        for (size_t p = p0; p < pe; p++) {
            __m512 b0 = _mm512_load_ps(bp);
#pragma GCC unroll 14
            for (int r = 0; r < GM_SG_MR; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)r * ldx + p]), b0, acc[r]);
            bp += 16;
        }
    }
    __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) {
        float *tr = t + r * 16;
        _mm512_store_ps(tr, first ? _mm512_mul_ps(va, acc[r])
                                  : _mm512_fmadd_ps(va, acc[r], _mm512_load_ps(tr)));
    }
}

/* The same for a 16-column panel and two tiles of 14 rows, x and x2 (same
 * row stride): 28 accumulators, one load of the panel per 28 FMAs (the
 * 14-row kernel above needs one per 14 and runs slower); tiles t and t2
 * (14 x 16 each).  The next 28 rows at pf (stride ldx) prefetched into L2
 * unless pf is NULL. */
GM_SG_TARGET static void gm_sg_kernel_bt16x2(size_t kc, const float *x, const float *x2,
                                             size_t ldx, const float *restrict bp,
                                             float *restrict t, float *restrict t2,
                                             float alpha, int first, const float *pf)
{
    __m512 acc[GM_SG_MR], acc2[GM_SG_MR];
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) acc[r] = acc2[r] = _mm512_setzero_ps();
    for (size_t p0 = 0; p0 < kc; p0 += 16) {
        size_t pe = kc - p0 < 16 ? kc : p0 + 16;
        if (pf)
            for (int r = 0; r < 2 * GM_SG_MR; r++)
                _mm_prefetch((const char *)(pf + (size_t)r * ldx + p0), _MM_HINT_T1);
        for (size_t p = p0; p < pe; p++) {
            __m512 b0 = _mm512_load_ps(bp);
#pragma GCC unroll 14
            for (int r = 0; r < GM_SG_MR; r++) {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)r * ldx + p]), b0, acc[r]);
                acc2[r] = _mm512_fmadd_ps(_mm512_set1_ps(x2[(size_t)r * ldx + p]), b0, acc2[r]);
            }
            bp += 16;
        }
    }
    __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 14
    for (int r = 0; r < GM_SG_MR; r++) {
        float *tr = t + r * 16, *tr2 = t2 + r * 16;
        _mm512_store_ps(tr, first ? _mm512_mul_ps(va, acc[r])
                                  : _mm512_fmadd_ps(va, acc[r], _mm512_load_ps(tr)));
        _mm512_store_ps(tr2, first ? _mm512_mul_ps(va, acc2[r])
                                   : _mm512_fmadd_ps(va, acc2[r], _mm512_load_ps(tr2)));
    }
}

/* Pack columns j0..j0+nr (nr = 16 or 32) of A^T, rows p0..p0+kc, into dst
 * (kc x nr, zero beyond m): dst[p nr + j] = a[(j0 + j) lda + p0 + p]. */
GM_SG_TARGET static void gm_sg_pack_at(const float *a, size_t lda, size_t p0, size_t kc,
                                       size_t j0, size_t m, size_t nr, float *restrict dst)
{
    size_t w = m - j0 < nr ? m - j0 : nr;
    for (size_t p = 0; p < kc; p += 16) {
        size_t wp = kc - p < 16 ? kc - p : 16;
        for (size_t c0 = 0; c0 < nr; c0 += 16) {
            size_t hh = w > c0 ? (w - c0 < 16 ? w - c0 : 16) : 0;
            gm_sg_transpose16(a + (j0 + c0) * lda + p0 + p, lda, hh, wp, dst + p * nr + c0, nr,
                              0xffff);
        }
    }
}

int gm_sgemm_avx512_abt(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, float *c, size_t ldc)
{
    if (m == 0 || n == 0 || k == 0) return GM_ERR_INVALID;
    if (lda < k || ldb < k || ldc < n) return GM_ERR_INVALID;
    if (!gm_sgemm_avx512_supported()) return GM_ERR_INVALID;
    if (m > SIZE_MAX / 4 / n || k > SIZE_MAX / 4 / (m + GM_SG_NR)) return GM_ERR_INVALID;
    if (alpha == 0.0f) {
        gm_sg_scale(m, n, 0.0f, c, ldc);
        return GM_OK;
    }
    size_t nkb, kcb;
    gm_sg_kblocks(k, &nkb, &kcb);
    /* panels of A^T: full ones of 32 columns, then the rest in one of 16
     * (<= 16 left) or 32 (masked) */
    size_t npan = (m + GM_SG_NR - 1) / GM_SG_NR, rem = m % GM_SG_NR;
    size_t mp = rem != 0 && rem <= 16 ? (npan - 1) * GM_SG_NR + 16 : npan * GM_SG_NR;
    size_t ntiles = (n + GM_SG_MR - 1) / GM_SG_MR, hlast = n - (ntiles - 1) * GM_SG_MR;
    float *apack = gm_sg_alloc(mp * k);
    /* the last, partial tile of B's rows: copied, padded with zero rows */
    float *xlast = hlast < GM_SG_MR ? gm_sg_alloc(GM_SG_MR * k) : NULL;
    if (apack == NULL || (hlast < GM_SG_MR && xlast == NULL)) {
        free(apack);
        free(xlast);
        return GM_ERR_NOMEM;
    }
    if (xlast) {
        memset(xlast, 0, GM_SG_MR * k * sizeof(float));
        for (size_t r = 0; r < hlast; r++)
            memcpy(xlast + r * k, b + ((ntiles - 1) * GM_SG_MR + r) * ldb, k * sizeof(float));
    }
    int nt = gm_threads_for(GM_WORK_FMA * (double)m * (double)n * (double)k);
#ifdef _OPENMP
    if (omp_in_parallel()) nt = 1;
#endif
    if ((size_t)nt > (ntiles + 1) / 2) nt = (int)((ntiles + 1) / 2);
    size_t nunits = (ntiles + 1) / 2;
    long npan_l = (long)npan, nunits_l = (long)nunits;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        /* panel jp of block kb (rows p0..p0+kc) at apack + p0 mp + jp 32 kc */
#pragma omp for schedule(static)
        for (long jp = 0; jp < npan_l; jp++) {
            size_t j0 = (size_t)jp * GM_SG_NR, nr = mp - j0 < GM_SG_NR ? mp - j0 : GM_SG_NR;
            for (size_t kb = 0; kb < nkb; kb++) {
                size_t p0 = kb * kcb, kc = k - p0 < kcb ? k - p0 : kcb;
                gm_sg_pack_at(a, lda, p0, kc, j0, m, nr, apack + p0 * mp + j0 * kc);
            }
        }
        float t[2][GM_SG_MR * GM_SG_NR] __attribute__((aligned(64)));
        /* units of two tiles (28 rows of B): the 16-column panel takes both
         * tiles at once */
#pragma omp for schedule(static)
        for (long u = 0; u < nunits_l; u++) {
            size_t ti0 = 2 * (size_t)u, nti = ntiles - ti0 < 2 ? ntiles - ti0 : 2;
            const float *x[2], *pf[2];
            size_t ldx[2], h[2];
            for (size_t e = 0; e < nti; e++) {
                size_t ti = ti0 + e, i0 = ti * GM_SG_MR;
                h[e] = n - i0 < GM_SG_MR ? n - i0 : GM_SG_MR;
                x[e] = h[e] < GM_SG_MR ? xlast : b + i0 * ldb;
                ldx[e] = h[e] < GM_SG_MR ? k : ldb;
                /* the rows of the tile two ahead (the next unit), prefetched
                 * into L2 during the first panel, if it is a full tile of B */
                pf[e] = ti + 2 < ntiles && (ti + 3 < ntiles || !xlast)
                            ? b + (i0 + 2 * GM_SG_MR) * ldb : NULL;
            }
            for (size_t j0 = 0; j0 < mp; j0 += GM_SG_NR) {
                size_t nr = mp - j0 < GM_SG_NR ? mp - j0 : GM_SG_NR;
                size_t w = m - j0 < nr ? m - j0 : nr;
                int pair = nr < GM_SG_NR && nti == 2 && ldx[0] == ldx[1];
                for (size_t e = 0; e < nti; e++) {
                    if (pair && e == 1) break;   /* done with tile 0 */
                    for (size_t kb = 0; kb < nkb; kb++) {
                        size_t p0 = kb * kcb, kc = k - p0 < kcb ? k - p0 : kcb;
                        const float *bp = apack + p0 * mp + j0 * kc;
                        const float *pfk = j0 == 0 && pf[e] ? pf[e] + p0 : NULL;
                        if (nr == GM_SG_NR)
                            gm_sg_kernel_bt32(kc, x[e] + p0, ldx[e], bp, t[e], alpha, kb == 0,
                                              pfk);
                        else if (pair)
                            gm_sg_kernel_bt16x2(kc, x[0] + p0, x[1] + p0, ldx[0], bp, t[0],
                                                t[1], alpha, kb == 0,
                                                j0 == 0 && pf[0] && pf[1] ? pf[0] + p0 : NULL);
                        else
                            gm_sg_kernel_bt16(kc, x[e] + p0, ldx[e], bp, t[e], alpha, kb == 0,
                                              pfk);
                    }
                }
                /* C[j0 + q][i0 + r] = t[r nr + q] */
                for (size_t e = 0; e < nti; e++) {
                    size_t i0 = (ti0 + e) * GM_SG_MR;
                    __mmask16 hm = (__mmask16)((1u << h[e]) - 1u);
                    for (size_t q0 = 0; q0 < w; q0 += 16)
                        gm_sg_transpose16(t[e] + q0, nr, h[e], w - q0 < 16 ? w - q0 : 16,
                                          c + (j0 + q0) * ldc + i0, ldc, hm);
                }
            }
        }
    }
    free(apack);
    free(xlast);
    return GM_OK;
}

/* Register-only FMA loop: 16 independent accumulator chains (enough to
 * cover the FMA latency on two pipes), `iters` iterations. */
GM_SG_TARGET static float gm_fma_loop512(long iters)
{
    __m512 acc[16];
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    }
    for (int i = 1; i < 16; i++) acc[0] = _mm512_add_ps(acc[0], acc[i]);
    return _mm512_reduce_add_ps(acc[0]);
}

GM_AVX2_TARGET static float gm_fma_loop256(long iters)
{
    __m256 acc[16];
    __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 16; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    }
    for (int i = 1; i < 16; i++) acc[0] = _mm256_add_ps(acc[0], acc[i]);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[0]), _mm256_extractf128_ps(acc[0], 1));
    float o[4];
    _mm_storeu_ps(o, s);
    return o[0] + o[1] + o[2] + o[3];
}

#else /* no AVX-512 kernels on this compiler/architecture */

int gm_sgemm_avx512(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                    size_t ldc)
{
    return GM_ERR_INVALID;
}

int gm_sgemm_avx512_abt(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, float *c, size_t ldc)
{
    return GM_ERR_INVALID;
}

#endif

#include <time.h>

static double gm_sg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Float32 FMA peak of the calling thread for vectors of `width` bits (256:
 * AVX2+FMA, 512: AVX-512F): GFLOP/s (2 flops per lane and FMA) of the best
 * of `reps` runs of a register-only loop of `iters` iterations of 16
 * independent FMAs.  GM_ERR_INVALID (returned as a negative value) for
 * another width or a CPU without that instruction set. */
double gm_fma_peak_gflops(int width, long iters, int reps)
{
#if GM_HAVE_SG_KERNEL
    if (iters < 1 || reps < 1) return (double)GM_ERR_INVALID;
    if (width == 512 && !gm_sgemm_avx512_supported()) return (double)GM_ERR_INVALID;
    if (width == 256 && !gm_avx2_supported()) return (double)GM_ERR_INVALID;
    if (width != 256 && width != 512) return (double)GM_ERR_INVALID;
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int r = 0; r < reps; r++) {
        double t = gm_sg_now();
        sink += width == 512 ? gm_fma_loop512(iters) : gm_fma_loop256(iters);
        t = gm_sg_now() - t;
        double lanes = width / 32;
        double g = 2.0 * 16.0 * lanes * (double)iters / t * 1e-9;
        if (g > best) best = g;
    }
    (void)sink;
    return best;
#else
    return (double)GM_ERR_INVALID;
#endif
}
