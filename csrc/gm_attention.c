/* gm_attention.c -- the one multi-head softmax attention of the core, used
 * by the backbone (gm_nn_attention: nothing kept) and by the trained head
 * (gm_head_attention_fwd: the exponentials and row sums kept for
 * gm_head_attention_bwd, its reverse mode).  float and double versions are
 * generated from gm_attention_tpl.h; the backbone's float32 attention of
 * head dimension 64 has a fused AVX-512 kernel below (gm_fa_*). */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "geomatch.h"
#include "gm_avx512.h"
#include "gm_blas.h"
#include "gm_parallel.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Query rows per task.  Measured on the head's 37 x 37-token step (2
 * images, 2 heads of 64): 64 -> 256 rows cut the forward + backward from 88
 * to 79 ms on one thread; 512 gave no more.  The backbone keeps 128-row
 * tiles (its scratch is threads x 128 x n, nothing is kept). */
#define GM_ATTN_TILE_HEAD 256
#define GM_ATTN_TILE_NN 128
#define GM_ATTN_MAXTILE 256

/* ---- fused float32 attention (head dimension 64, AVX-512) ----------------
 *
 * Flash-style: a task is GM_FA_QR query rows of one head against all keys,
 * in blocks of GM_FA_KB keys.  The scores of a block stay in registers
 * (QR x KB / 16 zmm), the softmax is online in float32 (running maximum m
 * and a 16-lane running sum l per row; the output accumulator is rescaled
 * by e^(m_old - m_new) when the maximum grows), and the probabilities of the
 * block (in L1) times the values are accumulated into QR x 64 float32.  The
 * n x n score matrix is never written to memory.  Keys are packed once per
 * head transposed in panels of 16 (kt[panel][channel][16]) and the values
 * contiguous (vt[key][channel]), both zero-padded to whole blocks.  Every
 * row is computed by one thread in a fixed order (its keys in increasing
 * blocks, the lanes of its sums folded in a fixed order), so the result
 * depends neither on the thread count nor on which tile the row falls in. */
/* 6 rows x 4 zmm: 24 accumulators (scores, then outputs) plus 4 key or
 * value vectors and a broadcast fit the 32 zmm registers.  Measured on a
 * ViT-S layer (1370 tokens, 6 heads, one thread): 4 rows 14.7 ms, 6 rows
 * 14.5 ms (within the noise); the tiled kernel 29.5 ms. */
#define GM_FA_HD 64
#define GM_FA_QR 6                 /* query rows per tile */
#define GM_FA_KV 4                 /* zmm of 16 keys per key block */
#define GM_FA_KB (16 * GM_FA_KV)   /* keys per block */

int gm_nn_attention_fused_supported(void)
{
#if GM_HAVE_AVX512
    return gm_avx512_supported();
#else
    return 0;
#endif
}

#if GM_HAVE_AVX512

/* Keeps a loaded vector in a register: without it GCC folds the load into
 * every multiply-add that uses it (one load per row instead of one per
 * tile), which makes the loops load-bound. */
#define GM_FA_IN_REGISTER(v) __asm__("" : "+v"(v))

/* Keys of one head (row i at x + i * ld + koff) into kt, values (at voff)
 * into vt, zero from n up to npad (a multiple of GM_FA_KB).  O(npad hd). */
GM_AVX512_TARGET static void gm_fa_pack(const float *x, size_t n, size_t ld, size_t koff,
                                        size_t voff, size_t npad, float *kt, float *vt)
{
    memset(kt + n / 16 * 16 * GM_FA_HD, 0, (npad - n / 16 * 16) * GM_FA_HD * sizeof(float));
    memset(vt + n * GM_FA_HD, 0, (npad - n) * GM_FA_HD * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        const float *row = x + i * ld;
        float *dst = kt + i / 16 * 16 * GM_FA_HD + i % 16;
        for (size_t c = 0; c < GM_FA_HD; c++) dst[c * 16] = row[koff + c];
        memcpy(vt + i * GM_FA_HD, row + voff, GM_FA_HD * sizeof(float));
    }
}

/* One tile: nr (<= GM_FA_QR) query rows (q, row stride ldq) of one head
 * against its n packed keys and values; writes the nr output rows (stride
 * ldo).  A row whose scores hold a NaN (or an infinity that makes one) is
 * written as NaN.  O(QR n hd). */
GM_AVX512_TARGET static void gm_fa_tile(const float *q, size_t ldq, size_t nr,
                                        const float *kt, const float *vt, size_t n,
                                        float scale, float *out, size_t ldo)
{
    float qs[GM_FA_QR][GM_FA_HD] __attribute__((aligned(64)));
    float o[GM_FA_QR][GM_FA_HD] __attribute__((aligned(64)));
    float pb[GM_FA_QR][GM_FA_KB] __attribute__((aligned(64)));
    float m[GM_FA_QR], corr[GM_FA_QR];
    __m512 lv[GM_FA_QR];
    __mmask16 bad[GM_FA_QR];
    for (size_t r = 0; r < GM_FA_QR; r++) {
        for (size_t c = 0; c < GM_FA_HD; c++) {
            qs[r][c] = r < nr ? q[r * ldq + c] * scale : 0.0f;
            o[r][c] = 0.0f;
        }
        m[r] = -INFINITY;
        lv[r] = _mm512_setzero_ps();
        bad[r] = 0;
    }
    for (size_t k0 = 0; k0 < n; k0 += GM_FA_KB) {
        size_t nk = n - k0 < GM_FA_KB ? n - k0 : GM_FA_KB;
        /* scores of the block: s[r][j] = keys k0 + 16 j .. k0 + 16 j + 15 */
        __m512 s[GM_FA_QR][GM_FA_KV];
        for (int r = 0; r < GM_FA_QR; r++)
            for (int j = 0; j < GM_FA_KV; j++) s[r][j] = _mm512_setzero_ps();
        const float *kb = kt + k0 * GM_FA_HD;
        for (int c = 0; c < GM_FA_HD; c++) {
            __m512 w[GM_FA_KV];
            for (int j = 0; j < GM_FA_KV; j++) {
                w[j] = _mm512_load_ps(kb + ((size_t)j * GM_FA_HD + (size_t)c) * 16);
                GM_FA_IN_REGISTER(w[j]);
            }
            for (int r = 0; r < GM_FA_QR; r++) {
                __m512 a = _mm512_set1_ps(qs[r][c]);
                for (int j = 0; j < GM_FA_KV; j++) s[r][j] = _mm512_fmadd_ps(a, w[j], s[r][j]);
            }
        }
        __mmask16 valid[GM_FA_KV];
        for (int j = 0; j < GM_FA_KV; j++) {
            size_t k = (size_t)j * 16;
            valid[j] = k >= nk ? (__mmask16)0
                               : (nk - k >= 16 ? (__mmask16)0xffff
                                               : (__mmask16)((1u << (nk - k)) - 1u));
        }
        /* online softmax: probabilities of the block into pb */
        for (int r = 0; r < GM_FA_QR; r++) {
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int j = 0; j < GM_FA_KV; j++) mx = _mm512_mask_max_ps(mx, valid[j], mx, s[r][j]);
            float bm = _mm512_reduce_max_ps(mx);
            corr[r] = 1.0f;
            if (bm > m[r]) {
                corr[r] = m[r] == -INFINITY ? 0.0f : expf(m[r] - bm);
                m[r] = bm;
            }
            __m512 mv = _mm512_set1_ps(m[r]), sum = _mm512_setzero_ps();
            for (int j = 0; j < GM_FA_KV; j++) {
                __m512 x = _mm512_sub_ps(s[r][j], mv);
                bad[r] |= _mm512_mask_cmp_ps_mask(valid[j], x, x, _CMP_UNORD_Q);
                __m512 p = _mm512_maskz_mov_ps(valid[j], gm_avx512_exp_ps(x));
                sum = _mm512_add_ps(sum, p);
                _mm512_store_ps(pb[r] + j * 16, p);
            }
            if (corr[r] != 1.0f) lv[r] = _mm512_mul_ps(lv[r], _mm512_set1_ps(corr[r]));
            lv[r] = _mm512_add_ps(lv[r], sum);
        }
        /* o = o * corr + p v over the block's keys */
        __m512 acc[GM_FA_QR][GM_FA_HD / 16];
        for (int r = 0; r < GM_FA_QR; r++) {
            __m512 cr = _mm512_set1_ps(corr[r]);
            for (int c = 0; c < GM_FA_HD / 16; c++)
                acc[r][c] = _mm512_mul_ps(_mm512_load_ps(o[r] + c * 16), cr);
        }
        const float *vb = vt + k0 * GM_FA_HD;
        for (size_t j = 0; j < nk; j++) {
            __m512 v[GM_FA_HD / 16];
            for (int c = 0; c < GM_FA_HD / 16; c++) {
                v[c] = _mm512_load_ps(vb + j * GM_FA_HD + c * 16);
                GM_FA_IN_REGISTER(v[c]);
            }
            for (int r = 0; r < GM_FA_QR; r++) {
                __m512 a = _mm512_set1_ps(pb[r][j]);
                for (int c = 0; c < GM_FA_HD / 16; c++)
                    acc[r][c] = _mm512_fmadd_ps(a, v[c], acc[r][c]);
            }
        }
        for (int r = 0; r < GM_FA_QR; r++)
            for (int c = 0; c < GM_FA_HD / 16; c++) _mm512_store_ps(o[r] + c * 16, acc[r][c]);
    }
    for (size_t r = 0; r < nr; r++) {
        float l = _mm512_reduce_add_ps(lv[r]);
        __m512 inv = _mm512_set1_ps(bad[r] ? NAN : 1.0f / l);
        for (int c = 0; c < GM_FA_HD / 16; c++)
            _mm512_storeu_ps(out + r * ldo + c * 16,
                             _mm512_mul_ps(_mm512_load_ps(o[r] + c * 16), inv));
    }
}

#endif /* GM_HAVE_AVX512 */

/* The fused float32 attention (gm_nn_attention_kernel with GM_NN_ATTN_FUSED;
 * the caller checked hd == 64 and the CPU).  Per image: the heads' keys and
 * values packed in parallel, then the (head, tile) tasks spread over the
 * threads.  O(batch heads n^2 hd) time, O(heads n hd) scratch. */
static int gm_fa_attention(const float *qkv, size_t batch, size_t n, size_t heads, float *out)
{
    if (batch == 0 || n == 0 || heads == 0) return GM_ERR_INVALID;
    if (n > INT_MAX / 4 || heads * GM_FA_HD > INT_MAX / 4) return GM_ERR_INVALID;
#if GM_HAVE_AVX512
    size_t dm = heads * GM_FA_HD, ld = 3 * dm;
    size_t npad = (n + GM_FA_KB - 1) / GM_FA_KB * GM_FA_KB;
    size_t per = 2 * npad * GM_FA_HD;   /* floats per head: kt, vt */
    void *mem = NULL;
    if (posix_memalign(&mem, 64, heads * per * sizeof(float)) != 0) return GM_ERR_NOMEM;
    float *buf = (float *)mem;
    size_t tiles = (n + GM_FA_QR - 1) / GM_FA_QR;
    long ntask = (long)(heads * tiles);
    int nthr = gm_threads_for(GM_WORK_FMA * 2.0 * (double)n * (double)n * (double)dm);
    const float scale = (float)(1.0 / sqrt((double)GM_FA_HD));
    for (size_t b = 0; b < batch; b++) {
        const float *x = qkv + b * n * ld;
        float *y = out + b * n * dm;
#pragma omp parallel num_threads(nthr)
        {
#pragma omp for schedule(static)
            for (long h = 0; h < (long)heads; h++)
                gm_fa_pack(x, n, ld, dm + (size_t)h * GM_FA_HD, 2 * dm + (size_t)h * GM_FA_HD,
                           npad, buf + (size_t)h * per, buf + (size_t)h * per + npad * GM_FA_HD);
#pragma omp for schedule(dynamic, 16)
            for (long t = 0; t < ntask; t++) {
                size_t h = (size_t)t / tiles, r0 = (size_t)t % tiles * GM_FA_QR;
                size_t nr = n - r0 < GM_FA_QR ? n - r0 : GM_FA_QR;
                const float *kt = buf + h * per;
                gm_fa_tile(x + r0 * ld + h * GM_FA_HD, ld, nr, kt, kt + npad * GM_FA_HD, n,
                           scale, y + r0 * dm + h * GM_FA_HD, dm);
            }
        }
    }
    free(mem);
    return GM_OK;
#else
    (void)qkv; (void)out;
    return GM_ERR_INVALID;
#endif
}

#define GM_TPL 32
#include "gm_tpl.h"
#include "gm_attention_tpl.h"
#include "gm_tpl_end.h"

#define GM_TPL 64
#include "gm_tpl.h"
#include "gm_attention_tpl.h"
#include "gm_tpl_end.h"
