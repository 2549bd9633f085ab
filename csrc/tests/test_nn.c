/* Tests of gm_nn.c against naive loops: linear (+GELU, +accumulate),
 * LayerNorm, SwiGLU and tiled attention, float and double. */
#include "geomatch.h"
#include "gm_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long seed = 88172645463325252ULL;

static double rnd(void) { return 2.0 * gm_test_uniform(&seed) - 1.0; }

static void test_linear(void)
{
    enum { N = 70, DI = 19, DO = 23 };
    static float x[N * DI], w[DO * DI], b[DO], y[N * DO], acc[N * DO];
    static double xd[N * DI], wd[DO * DI], bd[DO], yd[N * DO];
    for (int i = 0; i < N * DI; i++) xd[i] = x[i] = (float)rnd();
    for (int i = 0; i < DO * DI; i++) wd[i] = w[i] = (float)rnd();
    for (int i = 0; i < DO; i++) bd[i] = b[i] = (float)rnd();
    GM_CHECK(gm_nn_linear_f32(x, N, DI, w, b, DO, GM_NN_ACT_GELU, 0, y) == GM_OK);
    GM_CHECK(gm_nn_linear_f64(xd, N, DI, wd, bd, DO, GM_NN_ACT_NONE, 0, yd) == GM_OK);
    for (int i = 0; i < N * DO; i++) acc[i] = 1.0f;
    GM_CHECK(gm_nn_linear_f32(x, N, DI, w, b, DO, GM_NN_ACT_NONE, 1, acc) == GM_OK);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < DO; j++) {
            double t = bd[j];
            for (int k = 0; k < DI; k++) t += xd[i * DI + k] * wd[j * DI + k];
            GM_CHECK_CLOSE(yd[i * DO + j], t, 1e-12, 1e-12);
            GM_CHECK_CLOSE(acc[i * DO + j], 1.0 + t, 1e-5, 1e-5);
            GM_CHECK_CLOSE(y[i * DO + j], 0.5 * t * (1.0 + erf(t / sqrt(2.0))), 1e-5, 2e-6);
        }
    GM_CHECK(gm_nn_linear_f32(x, 0, DI, w, b, DO, 0, 0, y) == GM_ERR_INVALID);
    GM_CHECK(gm_nn_linear_f32(x, N, DI, w, b, DO, GM_NN_ACT_GELU, 1, y) == GM_ERR_INVALID);
    GM_CHECK(gm_nn_linear_f32(x, N, DI, w, b, DO, 7, 0, y) == GM_ERR_INVALID);
}

static void test_layernorm_swiglu(void)
{
    enum { N = 5, D = 37 };
    float x[N * D], y[N * D], g[D], bb[D], h[N * 2 * D], s[N * D];
    double xd[N * D], yd[N * D];
    for (int i = 0; i < N * D; i++) xd[i] = x[i] = (float)(3.0 + 2.0 * rnd());
    for (int i = 0; i < D; i++) { g[i] = (float)rnd(); bb[i] = (float)rnd(); }
    for (int i = 0; i < N * 2 * D; i++) h[i] = (float)(3.0 * rnd());
    GM_CHECK(gm_nn_layernorm_f32(x, N, D, g, bb, 1e-6, y) == GM_OK);
    GM_CHECK(gm_nn_layernorm_f64(xd, N, D, NULL, NULL, 1e-6, yd) == GM_OK);
    GM_CHECK(gm_nn_swiglu_f32(h, N, D, s) == GM_OK);
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < D; j++) m += xd[i * D + j];
        m /= D;
        for (int j = 0; j < D; j++) v += (xd[i * D + j] - m) * (xd[i * D + j] - m);
        v /= D;
        for (int j = 0; j < D; j++) {
            double z = (xd[i * D + j] - m) / sqrt(v + 1e-6);
            GM_CHECK_CLOSE(yd[i * D + j], z, 1e-12, 1e-12);
            GM_CHECK_CLOSE(y[i * D + j], z * g[j] + bb[j], 1e-5, 1e-5);
            double a = h[i * 2 * D + j], gate = h[i * 2 * D + D + j];
            GM_CHECK_CLOSE(s[i * D + j], a / (1.0 + exp(-a)) * gate, 1e-5, 1e-6);
        }
    }
    GM_CHECK(gm_nn_layernorm_f32(x, N, D, g, bb, -1.0, y) == GM_ERR_INVALID);
    GM_CHECK(gm_nn_swiglu_f32(h, N, 0, s) == GM_ERR_INVALID);
}

static void test_attention(void)
{
    enum { B = 2, N = 150, H = 3, HD = 4, DM = H * HD };
    static float qkv[B * N * 3 * DM], out[B * N * DM];
    static double qd[B * N * 3 * DM], od[B * N * DM], p[N], o[HD];
    for (int i = 0; i < B * N * 3 * DM; i++) qd[i] = qkv[i] = (float)(2.0 * rnd());
    GM_CHECK(gm_nn_attention_f32(qkv, B, N, H, HD, out) == GM_OK);
    GM_CHECK(gm_nn_attention_f64(qd, B, N, H, HD, od) == GM_OK);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i += 7) {
                gm_test_attention_row(qd + (size_t)b * N * 3 * DM, N, H, HD, h, i, p, o);
                for (int c = 0; c < HD; c++) {
                    size_t at = (size_t)b * N * DM + (size_t)i * DM + h * HD + c;
                    GM_CHECK_CLOSE(od[at], o[c], 1e-12, 1e-12);
                    GM_CHECK_CLOSE(out[at], o[c], 2e-5, 2e-6);
                }
            }
    GM_CHECK(gm_nn_attention_f32(qkv, B, 0, H, HD, out) == GM_ERR_INVALID);
}

/* The fused float32 kernel (head dimension 64) against the double row
 * reference, at lengths around its 64-key blocks and 6-row tiles, with
 * score ranges that make the running maximum grow across blocks; its
 * refusals where it does not apply. */
static void test_attention_fused(void)
{
    enum { B = 2, NMAX = 200, H = 2, HD = 64, DM = H * HD };
    static float qkv[B * NMAX * 3 * DM], out[B * NMAX * DM], tiled[B * NMAX * DM];
    static double qd[B * NMAX * 3 * DM], p[NMAX], o[HD];
    static const int lens[] = {1, 5, 63, 64, 65, 127, 200};
    int fused = gm_nn_attention_fused_supported();
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int N = lens[li];
        for (int i = 0; i < B * N * 3 * DM; i++) {
            int row = (i / (3 * DM)) % N;
            /* keys grow along the sequence: later blocks hold larger scores */
            double g = (i % (3 * DM)) >= DM && (i % (3 * DM)) < 2 * DM ? 1.0 + 0.05 * row : 1.0;
            qd[i] = qkv[i] = (float)(2.0 * g * rnd());
        }
        int st = gm_nn_attention_kernel_f32(qkv, B, N, H, HD, GM_NN_ATTN_FUSED, out);
        GM_CHECK(st == (fused ? GM_OK : GM_ERR_INVALID));
        if (!fused) continue;
        GM_CHECK(gm_nn_attention_kernel_f32(qkv, B, N, H, HD, GM_NN_ATTN_TILED, tiled) == GM_OK);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < N; i++) {
                    gm_test_attention_row(qd + (size_t)b * N * 3 * DM, N, H, HD, h, i, p, o);
                    for (int c = 0; c < HD; c++) {
                        size_t at = (size_t)b * N * DM + (size_t)i * DM + h * HD + c;
                        GM_CHECK_CLOSE(out[at], o[c], 1e-4, 2e-5);
                        GM_CHECK_CLOSE(tiled[at], o[c], 1e-4, 2e-5);
                    }
                }
    }
    /* a NaN in one query gives NaN in that row only */
    if (fused) {
        int N = 70;
        for (int i = 0; i < N * 3 * DM; i++) qkv[i] = (float)rnd();
        qkv[9 * 3 * DM + 3] = NAN;
        GM_CHECK(gm_nn_attention_kernel_f32(qkv, 1, N, H, HD, GM_NN_ATTN_FUSED, out) == GM_OK);
        GM_CHECK(isnan(out[9 * DM]) && isnan(out[9 * DM + HD - 1]));
        GM_CHECK(!isnan(out[9 * DM + HD]) && !isnan(out[8 * DM]) && !isnan(out[10 * DM]));
    }
    static double od[NMAX * 3 * 2 * 64];
    GM_CHECK(gm_nn_attention_kernel_f32(qkv, 1, 70, 4, 32, GM_NN_ATTN_FUSED, out) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_nn_attention_kernel_f64(od, 1, 70, H, HD, GM_NN_ATTN_FUSED, od) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_nn_attention_kernel_f32(qkv, 1, 70, H, HD, 7, out) == GM_ERR_INVALID);
    GM_CHECK(gm_nn_attention_kernel_f32(qkv, 1, 0, H, HD, GM_NN_ATTN_FUSED, out) ==
             GM_ERR_INVALID);
}

int main(void)
{
    GM_RUN(test_linear);
    GM_RUN(test_layernorm_swiglu);
    GM_RUN(test_attention);
    GM_RUN(test_attention_fused);
    return gm_test_summary();
}
