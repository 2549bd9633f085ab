/* Tests of gm_transfer.c: interpolation taps, exact upsample-argmax against a
 * naive C oracle that builds the upsampled maps, thread invariance, errors. */
#include "geomatch.h"
#include "gm_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_taps(void)
{
    /* dst, n_in, n_out -> i0, i1, w1 (written out from the rule) */
    static const struct { int64_t dst, n_in, n_out, i0, i1; double w1; } cases[] = {
        /* upsampling 2 -> 4: s = -0.25 (clamped), 0.25, 0.75, 1.25 (border) */
        {0, 2, 4, 0, 1, 0.0}, {1, 2, 4, 0, 1, 0.25}, {2, 2, 4, 0, 1, 0.75}, {3, 2, 4, 1, 1, 0.0},
        /* downsampling 4 -> 2: s = 0.5, 2.5 */
        {0, 4, 2, 0, 1, 0.5}, {1, 4, 2, 2, 3, 0.5},
        /* same size: identity */
        {2, 5, 5, 2, 3, 0.0},
        /* 37 -> 111 (ratio 1/3): s = (2*4+1)*37/222 - 0.5 = 1 exactly at dst 4 */
        {4, 37, 111, 1, 2, 0.0},
        /* single input sample */
        {6, 1, 9, 0, 0, 0.0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int64_t i0, i1;
        double w1;
        gm_transfer_linear_taps(cases[k].dst, cases[k].n_in, cases[k].n_out, &i0, &i1, &w1);
        GM_CHECK(i0 == cases[k].i0 && i1 == cases[k].i1 && w1 == cases[k].w1);
    }
}

/* Oracle weights, written from the rule directly (PyTorch's guard form). */
static void oracle_tap(int dst, int n_in, int n_out, int *lo, int *hi, double *lam)
{
    double real = (dst + 0.5) * ((double)n_in / n_out) - 0.5;
    if (real < 0) real = 0;
    *lo = (int)floor(real);
    if (*lo > n_in - 1) *lo = n_in - 1;
    *hi = *lo < n_in - 1 ? *lo + 1 : *lo;
    *lam = real - *lo;
    if (*lam < 0) *lam = 0;
    if (*lam > 1) *lam = 1;
}

/* Upsample feat (h, w, d) to (H, W, d) in double.  O(H W d). */
static double *oracle_upsample(const double *f, int h, int w, int d, int W, int H)
{
    double *out = malloc((size_t)H * W * d * sizeof *out);
    for (int Y = 0; Y < H; Y++) {
        int y0, y1, x0, x1;
        double ly, lx;
        oracle_tap(Y, h, H, &y0, &y1, &ly);
        for (int X = 0; X < W; X++) {
            oracle_tap(X, w, W, &x0, &x1, &lx);
            for (int c = 0; c < d; c++)
                out[((size_t)Y * W + X) * d + c] =
                    (1 - ly) * (1 - lx) * f[((size_t)y0 * w + x0) * d + c] +
                    (1 - ly) * lx * f[((size_t)y0 * w + x1) * d + c] +
                    ly * (1 - lx) * f[((size_t)y1 * w + x0) * d + c] +
                    ly * lx * f[((size_t)y1 * w + x1) * d + c];
        }
    }
    return out;
}

/* Random pair, both precisions; predicted pixels must be the oracle argmax or
 * tie with it to `tol` in the oracle's own similarity. */
static void check_pair(unsigned long long seed, int hs, int ws, int ht, int wt, int d,
                       int Ws, int Hs, int Wt, int Ht, int nk)
{
    size_t ns = (size_t)hs * ws * d, nt = (size_t)ht * wt * d;
    double *sf = malloc(ns * sizeof *sf), *tf = malloc(nt * sizeof *tf);
    double *kp = malloc(2 * (size_t)nk * sizeof *kp), *out = malloc(2 * (size_t)nk * sizeof *out);
    float *sf32 = malloc(ns * sizeof *sf32), *tf32 = malloc(nt * sizeof *tf32);
    float *kp32 = malloc(2 * (size_t)nk * sizeof *kp32);
    float *out32 = malloc(2 * (size_t)nk * sizeof *out32);
    int64_t ss[2] = {Ws, Hs}, ts[2] = {Wt, Ht};
    unsigned long long st = seed;
    for (size_t i = 0; i < ns; i++) sf32[i] = (float)(sf[i] = gm_test_uniform(&st) - 0.3);
    for (size_t i = 0; i < nt; i++) tf32[i] = (float)(tf[i] = gm_test_uniform(&st) - 0.3);
    for (int k = 0; k < nk; k++) {
        kp[2 * k] = floor(gm_test_uniform(&st) * Ws * 4) / 4;
        kp[2 * k + 1] = floor(gm_test_uniform(&st) * Hs * 4) / 4;
        if (k == 0) { kp[0] = Ws - 1; kp[1] = Hs - 1; }
        if (k == 1) { kp[2] = 0; kp[3] = 0; }
        kp32[2 * k] = (float)kp[2 * k];
        kp32[2 * k + 1] = (float)kp[2 * k + 1];
    }
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, hs, ws, ht, wt, d, nk,
                                             out) == GM_OK);
    GM_CHECK(gm_transfer_upsample_argmax_f32(sf32, tf32, kp32, ss, ts, 1, hs, ws, ht, wt, d,
                                             nk, out32) == GM_OK);
    {
        double *su = oracle_upsample(sf, hs, ws, d, Ws, Hs);
        double *tu = oracle_upsample(tf, ht, wt, d, Wt, Ht);
        for (int k = 0; k < nk; k++) {
            const double *q = su + ((size_t)floor(kp[2 * k + 1]) * Ws +
                                    (size_t)floor(kp[2 * k])) * d;
            double best = -2;
            for (size_t p = 0; p < (size_t)Wt * Ht; p++) {
                double c = gm_test_cosine(q, tu + p * d, (size_t)d);
                if (c > best) best = c;
            }
            for (int prec = 0; prec < 2; prec++) {
                double x = prec ? out32[2 * k] : out[2 * k];
                double y = prec ? out32[2 * k + 1] : out[2 * k + 1];
                GM_CHECK(x == floor(x) && y == floor(y));
                GM_CHECK(x >= 0 && x < Wt && y >= 0 && y < Ht);
                if (x >= 0 && x < Wt && y >= 0 && y < Ht) {
                    double c = gm_test_cosine(q, tu + ((size_t)y * Wt + (size_t)x) * d, (size_t)d);
                    GM_CHECK_CLOSE(c, best, 0, prec ? 2e-5 : 1e-11);
                }
            }
        }
        free(su);
        free(tu);
    }
    free(sf); free(tf); free(kp); free(out);
    free(sf32); free(tf32); free(kp32); free(out32);
}

static void test_vs_oracle(void)
{
    check_pair(1, 5, 5, 5, 5, 8, 31, 31, 29, 33, 6);
    check_pair(2, 4, 6, 7, 3, 5, 40, 17, 13, 45, 6);     /* non-square */
    check_pair(3, 6, 6, 6, 6, 4, 4, 3, 5, 2, 4);         /* images smaller than grid */
    check_pair(4, 3, 8, 2, 9, 6, 8, 3, 9, 2, 3);         /* image size == grid size */
    check_pair(5, 1, 1, 1, 5, 3, 7, 6, 22, 4, 3);        /* one-cell grids */
    check_pair(6, 4, 4, 5, 5, 37, 50, 37, 41, 53, 9);    /* D not a multiple of 16 */
}

static void test_threads_and_batch(void)
{
    enum { B = 3, HS = 6, WS = 5, HT = 7, WT = 6, D = 21, K = 7 };
    static float sf[B * HS * WS * D], tf[B * HT * WT * D], kp[B * K * 2];
    float o1[B * K * 2], o2[B * K * 2], o3[K * 2];
    int64_t ss[2 * B] = {40, 30, 11, 50, 7, 7}, ts[2 * B] = {160, 120, 33, 9, 170, 171};
    unsigned long long st = 77;
    int before = gm_get_num_threads();
    for (size_t i = 0; i < sizeof sf / sizeof *sf; i++) sf[i] = (float)gm_test_uniform(&st) - 0.5f;
    for (size_t i = 0; i < sizeof tf / sizeof *tf; i++) tf[i] = (float)gm_test_uniform(&st) - 0.5f;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++) {
            kp[(b * K + k) * 2] = (float)(gm_test_uniform(&st) * (double)ss[2 * b]);
            kp[(b * K + k) * 2 + 1] = (float)(gm_test_uniform(&st) * (double)ss[2 * b + 1]);
        }
    gm_set_num_threads(1);
    GM_CHECK(gm_transfer_upsample_argmax_f32(sf, tf, kp, ss, ts, B, HS, WS, HT, WT, D, K,
                                             o1) == GM_OK);
    gm_set_num_threads(2);
    GM_CHECK(gm_transfer_upsample_argmax_f32(sf, tf, kp, ss, ts, B, HS, WS, HT, WT, D, K,
                                             o2) == GM_OK);
    GM_CHECK(memcmp(o1, o2, sizeof o1) == 0);
    /* (pairs 0 and 2 are above the parallel threshold, pair 1 below) */
    /* batch element 1 alone gives the same answer */
    GM_CHECK(gm_transfer_upsample_argmax_f32(sf + HS * WS * D, tf + HT * WT * D, kp + K * 2,
                                             ss + 2, ts + 2, 1, HS, WS, HT, WT, D, K,
                                             o3) == GM_OK);
    GM_CHECK(memcmp(o3, o1 + K * 2, sizeof o3) == 0);
    gm_set_num_threads(before);
}

static void test_errors(void)
{
    double sf[2 * 2 * 3], tf[2 * 2 * 3], kp[2] = {1.5, 0.5}, out[2] = {-7, -7};
    int64_t ss[2] = {4, 3}, ts[2] = {5, 5}, bad[2] = {0, 3};
    for (int i = 0; i < 12; i++) sf[i] = tf[i] = 1.0 + i;
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 3, 1, out) == GM_OK);
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, bad, ts, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_RANGE_ARG(3));
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, bad, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_RANGE_ARG(4));
    /* the size policy: each side at most GM_MAX_IMAGE_SIDE, checked before
     * any allocation (2**30 would otherwise allocate and scan for hours) */
    int64_t huge[2] = {4, (int64_t)1 << 30}, edge[2] = {GM_MAX_IMAGE_SIDE, 3};
    gm_clear_error();
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, huge, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_RANGE_ARG(4));
    GM_CHECK(strstr(gm_error_detail(), "H = 1073741824") != NULL);
    GM_CHECK(gm_transfer_check_f64(kp, edge, ss, 1, 1) == GM_OK);
    edge[0] = GM_MAX_IMAGE_SIDE + 1;
    GM_CHECK(gm_transfer_check_f64(kp, edge, ss, 1, 1) == GM_ERR_RANGE_ARG(3));
    GM_CHECK(gm_transfer_check_f64(kp, ss, edge, 1, 1) == GM_ERR_RANGE_ARG(4));
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 0, 2, 2, 2, 3, 1, out) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 0, 1, out) ==
             GM_ERR_INVALID);
    kp[0] = 4.0; /* x == W: outside */
    gm_clear_error();
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_RANGE_ARG(2));
    GM_CHECK(strstr(gm_error_detail(), "(x, y) = (4, 0.5)") != NULL);
    kp[0] = -0.25;
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_RANGE_ARG(2));
    GM_CHECK(gm_transfer_check_f64(kp, ss, ts, 1, 1) == GM_ERR_RANGE_ARG(2));
    kp[0] = NAN;
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_NONFINITE_ARG(2));
    kp[0] = 1.0;
    sf[5] = INFINITY;
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_NONFINITE_ARG(0));
    sf[5] = 1.0;
    tf[7] = NAN;
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 3, 1, out) ==
             GM_ERR_NONFINITE_ARG(1));
    /* empty batch / no keypoints: nothing to do */
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 0, 2, 2, 2, 2, 3, 1, out) == GM_OK);
    GM_CHECK(gm_transfer_upsample_argmax_f64(sf, tf, kp, ss, ts, 1, 2, 2, 2, 2, 3, 0, out) == GM_OK);
    {
        /* float32 squares overflow: reported, not a silent wrong answer */
        float sf32[12], tf32[12], kp32[2] = {1.0f, 1.0f}, o32[2];
        for (int i = 0; i < 12; i++) sf32[i] = tf32[i] = 1e30f;
        GM_CHECK(gm_transfer_upsample_argmax_f32(sf32, tf32, kp32, ss, ts, 1, 2, 2, 2, 2, 3, 1,
                                                 o32) == GM_ERR_NUMERIC);
    }
}

/* The branch and bound against the exhaustive scan (GM_TRANSFER_FULL_SCAN),
 * bit for bit, on maps where it prunes (a shared component plus noise, as
 * in bench_eval) and where it does not (independent noise, integer ties). */
static void test_branch_and_bound(void)
{
    enum { H = 9, W = 8, D = 33, K = 9 };
    static float sf[H * W * D], tf[H * W * D], base[H * W * D], kp[2 * K];
    float o1[2 * K], o2[2 * K];
    int64_t ss[2] = {70, 61}, ts[2] = {83, 77};
    unsigned long long st = 12345;
    for (size_t i = 0; i < sizeof base / sizeof *base; i++)
        base[i] = (float)gm_test_uniform(&st) - 0.5f;
    for (int kind = 0; kind < 3; kind++) {
        for (size_t i = 0; i < sizeof sf / sizeof *sf; i++) {
            float a = (float)gm_test_uniform(&st) - 0.5f, b = (float)gm_test_uniform(&st) - 0.5f;
            sf[i] = kind == 0 ? 0.7f * base[i] + a : a;
            tf[i] = kind == 0 ? 0.7f * base[i] + b : (kind == 2 ? floorf(3 * b) : b);
        }
        for (int k = 0; k < K; k++) {
            kp[2 * k] = (float)(gm_test_uniform(&st) * (double)ss[0]);
            kp[2 * k + 1] = (float)(gm_test_uniform(&st) * (double)ss[1]);
        }
        for (int thr = 1; thr <= 2; thr++) {
            int before = gm_get_num_threads();
            gm_set_num_threads(thr);
            GM_CHECK(gm_transfer_upsample_argmax_ex_f32(sf, tf, kp, ss, ts, 1, H, W, H, W, D, K,
                                                        0, o1) == GM_OK);
            GM_CHECK(gm_transfer_upsample_argmax_ex_f32(sf, tf, kp, ss, ts, 1, H, W, H, W, D, K,
                                                        GM_TRANSFER_FULL_SCAN, o2) == GM_OK);
            GM_CHECK(memcmp(o1, o2, sizeof o1) == 0);
            gm_set_num_threads(before);
        }
    }
}

/* Pairs sharing a target in one call: each pair's result is its own call's. */
static void test_group(void)
{
    enum { P = 3, H = 5, W = 6, D = 17, KMAX = 4 };
    static double sf[P][H * W * D], tf[H * W * D], kp[P][2 * KMAX], out[P][2 * KMAX];
    double one[2 * KMAX];
    const double *sfp[P], *kpp[P];
    double *outp[P];
    size_t nk[P] = {4, 0, 3};
    int64_t ss[2 * P] = {30, 20, 9, 9, 41, 33}, ts[2] = {27, 35};
    unsigned long long st = 99;
    for (size_t i = 0; i < H * W * D; i++) tf[i] = gm_test_uniform(&st) - 0.4;
    for (int p = 0; p < P; p++) {
        for (size_t i = 0; i < H * W * D; i++) sf[p][i] = gm_test_uniform(&st) - 0.4;
        for (size_t k = 0; k < nk[p]; k++) {
            kp[p][2 * k] = gm_test_uniform(&st) * (double)ss[2 * p];
            kp[p][2 * k + 1] = gm_test_uniform(&st) * (double)ss[2 * p + 1];
        }
        sfp[p] = sf[p];
        kpp[p] = kp[p];
        outp[p] = out[p];
    }
    GM_CHECK(gm_transfer_upsample_argmax_group_f64(sfp, kpp, nk, ss, P, H, W, tf, ts, H, W, D,
                                                   0, outp) == GM_OK);
    for (int p = 0; p < P; p++) {
        if (nk[p] == 0) continue;
        GM_CHECK(gm_transfer_upsample_argmax_f64(sf[p], tf, kp[p], ss + 2 * p, ts, 1, H, W, H, W,
                                                 D, nk[p], one) == GM_OK);
        GM_CHECK(memcmp(one, out[p], 2 * nk[p] * sizeof(double)) == 0);
    }
    kp[2][0] = 1e9;   /* a keypoint outside its source image */
    GM_CHECK(gm_transfer_upsample_argmax_group_f64(sfp, kpp, nk, ss, P, H, W, tf, ts, H, W, D,
                                                   0, outp) == GM_ERR_RANGE_ARG(2));
}

/* float16 -> float32: every bit pattern against a conversion written from
 * the format's definition (ldexp), non-finite flag. */
static void test_f16(void)
{
    static uint16_t x[65536];
    static float y[65536];
    int bad = 0;
    for (unsigned i = 0; i < 65536; i++) x[i] = (uint16_t)i;
    GM_CHECK(gm_f16_to_f32(x, y, 65536) == GM_ERR_NONFINITE_ARG(0));
    for (unsigned i = 0; i < 65536; i++) {
        unsigned e = (i >> 10) & 31, m = i & 1023;
        double v = e == 0 ? ldexp((double)m, -24) : ldexp(1024.0 + m, (int)e - 25);
        if (i & 0x8000) v = -v;
        if (e == 31) {
            bad += m == 0 ? !(isinf(y[i]) && (signbit(y[i]) != 0) == ((i & 0x8000) != 0))
                          : !isnan(y[i]);
        } else {
            bad += (double)y[i] != v || (signbit(y[i]) != 0) != ((i & 0x8000) != 0);
        }
    }
    GM_CHECK(bad == 0);
    GM_CHECK(gm_f16_to_f32(x, y, 0x7c00) == GM_OK);   /* every finite positive value */
    GM_CHECK(gm_f16_to_f32(NULL, y, 3) == GM_ERR_INVALID);
}

/* Half-precision bits of a moderate random value: either sign, exponent
 * 10..17 (2^-5 .. 4), any mantissa. */
static uint16_t half_bits(unsigned long long *st)
{
    unsigned long long u;
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    u = *st >> 33;
    return (uint16_t)((u & 0x83ffu) | ((10u + (unsigned)(u >> 20) % 8u) << 10));
}

/* float16 maps in the group call: every prediction that of the float32 call
 * on the converted maps (with the kernel's own buffer and a caller's work
 * buffer, 1 and 3 threads, bounds and full scan); non-finite maps refused. */
static void test_group_f16(void)
{
    enum { P = 3, H = 7, W = 5, D = 40, KMAX = 9 };
    static uint16_t sh[P][H * W * D], th[H * W * D];
    static float sf[P][H * W * D], tf[H * W * D], kp[P][2 * KMAX], a[P][2 * KMAX],
        b[P][2 * KMAX], work[H * W * D];
    const uint16_t *shp[P];
    const float *sfp[P], *kpp[P];
    float *ap[P], *bp[P];
    size_t nk[P] = {9, 0, 5};
    int64_t ss[2 * P] = {50, 44, 9, 9, 31, 70}, ts[2] = {61, 38};
    unsigned long long st = 7;
    for (size_t i = 0; i < H * W * D; i++) th[i] = half_bits(&st);
    for (int p = 0; p < P; p++) {
        for (size_t i = 0; i < H * W * D; i++) sh[p][i] = half_bits(&st);
        GM_CHECK(gm_f16_to_f32(sh[p], sf[p], H * W * D) == GM_OK);
        GM_CHECK(gm_f16_all_finite(sh[p], H * W * D) == GM_OK);
        for (size_t k = 0; k < nk[p]; k++) {
            kp[p][2 * k] = (float)(gm_test_uniform(&st) * 0.999 * (double)ss[2 * p]);
            kp[p][2 * k + 1] = (float)(gm_test_uniform(&st) * 0.999 * (double)ss[2 * p + 1]);
        }
        shp[p] = sh[p];
        sfp[p] = sf[p];
        kpp[p] = kp[p];
        ap[p] = a[p];
        bp[p] = b[p];
    }
    GM_CHECK(gm_f16_to_f32(th, tf, H * W * D) == GM_OK);
    for (int threads = 1; threads <= 3; threads += 2) {
        gm_set_num_threads(threads);
        for (int flags = 0; flags <= GM_TRANSFER_FULL_SCAN; flags += GM_TRANSFER_FULL_SCAN) {
            GM_CHECK(gm_transfer_upsample_argmax_group_f32(sfp, kpp, nk, ss, P, H, W, tf, ts, H,
                                                           W, D, flags, bp) == GM_OK);
            for (int use_work = 0; use_work < 2; use_work++) {
                memset(a, 0, sizeof a);
                GM_CHECK(gm_transfer_upsample_argmax_group_f16(
                             shp, kpp, nk, ss, P, H, W, th, ts, H, W, D, flags,
                             use_work ? work : NULL, ap) == GM_OK);
                GM_CHECK(memcmp(a, b, sizeof a) == 0);
            }
        }
    }
    gm_set_num_threads(1);
    sh[2][H * W * D - 1] = 0x7e00;    /* a NaN in the last value of a source map */
    GM_CHECK(gm_f16_all_finite(sh[2], H * W * D) == GM_ERR_NONFINITE_ARG(0));
    GM_CHECK(gm_transfer_upsample_argmax_group_f16(shp, kpp, nk, ss, P, H, W, th, ts, H, W, D,
                                                   0, NULL, ap) == GM_ERR_NONFINITE_ARG(0));
    sh[2][H * W * D - 1] = sh[2][0];
    th[3] = 0xfc00;                   /* -inf in the target */
    GM_CHECK(gm_transfer_upsample_argmax_group_f16(shp, kpp, nk, ss, P, H, W, th, ts, H, W, D,
                                                   0, work, ap) == GM_ERR_NONFINITE_ARG(1));
    GM_CHECK(gm_f16_all_finite(NULL, 3) == GM_ERR_INVALID);
}

int main(void)
{
    printf("test_transfer\n");
    GM_RUN(test_taps);
    GM_RUN(test_vs_oracle);
    GM_RUN(test_threads_and_batch);
    GM_RUN(test_errors);
    GM_RUN(test_branch_and_bound);
    GM_RUN(test_group);
    GM_RUN(test_f16);
    GM_RUN(test_group_f16);
    return gm_test_summary();
}
