/* Tests of gm_bf16.c: the bfloat16 rounding of the packed weights (ties to
 * even, spelled-out values), the linear layer against a double loop over
 * bfloat16-rounded operands, and the error codes.  On a CPU without
 * AVX512-BF16 the kernels must refuse (GM_ERR_INVALID). */
#include "geomatch.h"
#include "gm_test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long seed = 7046029254386353131ULL;

static double rnd(void) { return 2.0 * gm_test_uniform(&seed) - 1.0; }

/* nearest bfloat16, ties to even, written independently of gm_bf16.c */
static double ref_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t lo = u & 0xffffu, hi = u >> 16;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) hi += 1;
    u = hi << 16;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

static void test_pack_rounding(void)
{
    /* (dout 3, din 1): 1 + 2^-8 ties to 1, 1 + 3 * 2^-8 ties to 1 + 2^-6 */
    const float w[3] = {1.00390625f, 1.01171875f, -2.5f};
    uint16_t packed[64];
    GM_CHECK(gm_bf16_packed_size(1, 3) == 32);
    GM_CHECK(gm_bf16_pack_weight(w, 1, 3, packed) == GM_OK);
    GM_CHECK(packed[0] == 0x3f80);  /* 1.0 */
    GM_CHECK(packed[1] == 0);       /* odd din: the pair's second half is zero */
    GM_CHECK(packed[2] == 0x3f82);  /* 1.015625 */
    GM_CHECK(packed[4] == 0xc020);  /* -2.5 */
    GM_CHECK(packed[6] == 0);       /* columns beyond dout are zero */
    GM_CHECK(gm_bf16_pack_weight(w, 0, 3, packed) == GM_ERR_INVALID);
}

static void test_linear(void)
{
    enum { N = 13, DI = 37, DO = 41 };
    static float x[N * DI], w[DO * DI], b[DO], y[N * DO];
    static uint16_t packed[4096];
    for (int i = 0; i < N * DI; i++) x[i] = (float)rnd();
    for (int i = 0; i < DO * DI; i++) w[i] = (float)rnd();
    for (int i = 0; i < DO; i++) b[i] = (float)rnd();
    GM_CHECK(gm_bf16_packed_size(DI, DO) <= 4096);
    GM_CHECK(gm_bf16_pack_weight(w, DI, DO, packed) == GM_OK);
    int st = gm_nn_linear_bf16(x, N, DI, packed, b, DO, GM_NN_ACT_NONE, 0, y);
    if (!gm_bf16_supported()) {
        GM_CHECK(st == GM_ERR_INVALID);
        return;
    }
    GM_CHECK(st == GM_OK);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < DO; j++) {
            double t = b[j], mag = fabs(b[j]);
            for (int k = 0; k < DI; k++) {
                double p = ref_bf16(x[i * DI + k]) * ref_bf16(w[j * DI + k]);
                t += p;
                mag += fabs(p);
            }
            GM_CHECK_CLOSE(y[i * DO + j], t, 0.0, 1e-6 * mag + 1e-7);
        }
    GM_CHECK(gm_nn_linear_bf16(x, 0, DI, packed, b, DO, 0, 0, y) == GM_ERR_INVALID);
    GM_CHECK(gm_nn_linear_bf16(x, N, DI, packed, b, DO, GM_NN_ACT_GELU, 1, y) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_nn_attention_bf16(x, 1, 4, 1, 32, y) == GM_ERR_INVALID); /* head dim 64 only */
}

/* bfloat16 activations out (fc1 with GELU, rounded in the epilogue) and in
 * (fc2): the bits of the float32 result's nearest-even rounding, and fc2 on
 * them equal to fc2 on their float32 values; 1 and 3 threads; bad shapes. */
static void test_linear_bf16_io(void)
{
    enum { N = 75, DI = 40, DO = 64, D2 = 24 };
    static float x[N * DI], w[DO * DI], b[DO], y[N * DO], w2[D2 * DO], z1[N * D2], z2[N * D2];
    static uint16_t packed[8192], packed2[8192], y16[N * DO];
    for (int i = 0; i < N * DI; i++) x[i] = (float)(3.0 * rnd());
    for (int i = 0; i < DO * DI; i++) w[i] = (float)rnd();
    for (int i = 0; i < DO; i++) b[i] = (float)rnd();
    for (int i = 0; i < D2 * DO; i++) w2[i] = (float)rnd();
    GM_CHECK(gm_bf16_packed_size(DI, DO) <= 8192 && gm_bf16_packed_size(DO, D2) <= 8192);
    GM_CHECK(gm_bf16_pack_weight(w, DI, DO, packed) == GM_OK);
    GM_CHECK(gm_bf16_pack_weight(w2, DO, D2, packed2) == GM_OK);
    if (!gm_bf16_supported()) {
        GM_CHECK(gm_nn_linear_bf16_io(x, NULL, N, DI, packed, b, DO, 0, 0, NULL, y16) ==
                 GM_ERR_INVALID);
        return;
    }
    for (int threads = 1; threads <= 3; threads += 2) {
        gm_set_num_threads(threads);
        for (int act = 0; act <= GM_NN_ACT_GELU; act++) {
            int bad = 0;
            GM_CHECK(gm_nn_linear_bf16(x, N, DI, packed, b, DO, act, 0, y) == GM_OK);
            memset(y16, 0xff, sizeof y16);
            GM_CHECK(gm_nn_linear_bf16_io(x, NULL, N, DI, packed, b, DO, act, 0, NULL, y16) ==
                     GM_OK);
            for (int i = 0; i < N * DO; i++) {
                float r = (float)ref_bf16(y[i]);
                uint32_t u;
                memcpy(&u, &r, 4);
                bad += y16[i] != (uint16_t)(u >> 16);
            }
            GM_CHECK(bad == 0);
            /* fc2 on the bits == fc2 on their float32 values */
            for (int i = 0; i < N * DO; i++) {
                uint32_t u = (uint32_t)y16[i] << 16;
                memcpy(&y[i], &u, 4);
            }
            for (int i = 0; i < N * D2; i++) z1[i] = z2[i] = (float)i;
            GM_CHECK(gm_nn_linear_bf16(y, N, DO, packed2, NULL, D2, 0, 1, z1) == GM_OK);
            GM_CHECK(gm_nn_linear_bf16_io(NULL, y16, N, DO, packed2, NULL, D2, 0, 1, z2, NULL) ==
                     GM_OK);
            GM_CHECK(memcmp(z1, z2, sizeof z1) == 0);
        }
    }
    gm_set_num_threads(1);
    /* bf16 out needs no accumulate and dout % 32 == 0; bf16 in an even din */
    GM_CHECK(gm_nn_linear_bf16_io(x, NULL, N, DI, packed, b, DO, 0, 1, NULL, y16) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_nn_linear_bf16_io(NULL, y16, N, DO, packed2, NULL, D2, 0, 0, NULL, y16) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_nn_linear_bf16_io(NULL, y16, N, DO - 1, packed2, NULL, D2, 0, 0, z1, NULL) ==
             GM_ERR_INVALID);
    GM_CHECK(gm_nn_linear_bf16_io(NULL, NULL, N, DI, packed, b, DO, 0, 0, y, NULL) ==
             GM_ERR_INVALID);
}

static void test_attention(void)
{
    enum { B = 2, N = 70, H = 2, HD = 64, DM = H * HD };
    static float qkv[B * N * 3 * DM], out[B * N * DM];
    static double qr[B * N * 3 * DM], p[N], o[HD];
    for (int i = 0; i < B * N * 3 * DM; i++) qkv[i] = (float)(2.0 * rnd());
    /* the kernel reads its inputs rounded to bfloat16: so does the reference */
    for (int i = 0; i < B * N * 3 * DM; i++) qr[i] = ref_bf16(qkv[i]);
    int st = gm_nn_attention_bf16(qkv, B, N, H, HD, out);
    if (!gm_bf16_supported()) {
        GM_CHECK(st == GM_ERR_INVALID);
        return;
    }
    GM_CHECK(st == GM_OK);
    GM_CHECK(gm_nn_attention_bf16(qkv, B, 0, H, HD, out) == GM_ERR_INVALID);
    double worst = 0, top = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                gm_test_attention_row(qr + (size_t)b * N * 3 * DM, N, H, HD, h, i, p, o);
                for (int c = 0; c < HD; c++) {
                    double d = fabs(out[(size_t)b * N * DM + (size_t)i * DM + h * HD + c] - o[c]);
                    if (d > worst) worst = d;
                    if (fabs(o[c]) > top) top = fabs(o[c]);
                }
            }
    /* the probabilities are rounded to bfloat16 too: relative 2^-9 each */
    GM_CHECK(worst <= 4e-3 * top);
}

static void test_peak(void)
{
    double g = gm_bf16_peak_gflops(20000, 2);
    if (!gm_bf16_supported()) {
        GM_CHECK(g < 0);
        return;
    }
    GM_CHECK(g > 0);
    GM_CHECK(gm_bf16_peak_gflops(0, 1) < 0);
    GM_CHECK(gm_bf16_peak_gflops(10, 0) < 0);
}

int main(void)
{
    GM_RUN(test_pack_rounding);
    GM_RUN(test_linear);
    GM_RUN(test_linear_bf16_io);
    GM_RUN(test_attention);
    GM_RUN(test_peak);
    return gm_test_summary();
}
