/* Row-invariant matrix products for the sampling step (model/native.py builds and loads this file).
 *
 *   y[b, n] = relu?( add[b, n] + ( bias[n] + sum over blocks i, then k of x_i[b, k] * W_i[n, k] ) )
 *
 * Every element is computed by the same operations in the same order whatever the batch, the row's place in it
 * and the column block it falls in: the accumulator starts at the bias (or 0), takes one fused multiply-add per
 * k, block after block, k in order; then `add` is added and ReLU applied. So a row gets the same bits alone or in
 * any batch, and on any x86-64 CPU with FMA (vector width only decides how many columns run side by side: the
 * lanes are independent and a fused multiply-add rounds once). Blocking over rows (4 or 2 at a time) reuses the
 * weights a row loads; it changes no element's arithmetic.
 *
 * The weights come transposed, concatenated over the blocks (K = K_0 + K_1 + K_2 rows) and zero-padded to ldw
 * columns (a multiple of 16), stored panel by panel: the columns of each block of 4 * L (the last blocks: L), K rows
 * of them, one after the other, so the kernel streams each panel from memory in order (panel n0 starts at n0 * K;
 * vrnn_lanes() gives L). bias (when given) has ldw entries. No allocation, no threads, no global state.
 */
#include <string.h>

/* floats per vector: a vector extension, which GCC maps onto the target's registers (wider than the registers
   it is slow). The bits do not depend on it. */
#if defined(__AVX512F__)
#define L 16
#else
#define L 8
#endif
typedef float vf __attribute__((vector_size(L * sizeof(float))));
typedef int vi __attribute__((vector_size(L * sizeof(int))));

static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vf load_part(const float *p, int n) {
    if (n == L) return load(p);
    vf v = {0};
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

static inline void store_part(float *p, vf v, int n) {
    if (n == L)
        memcpy(p, &v, sizeof v);
    else
        memcpy(p, &v, (size_t)n * sizeof(float));
}

typedef struct {
    const float *x[3]; /* the blocks' inputs, row 0 of this call */
    int k[3];          /* their widths (0: no block) */
    int ld[3];         /* their row strides */
} inputs;

#define UNROLL _Pragma("GCC unroll 8")

/* R rows x V vectors of columns starting at column n0 (nvalid of them real). */
#define BLOCK(R, V)                                                                                              \
    static void block_##R##_##V(const inputs *in, const float *wt, int ldw, int n0, int nvalid, const float *bias, \
                                const float *add, int lda, int relu, float *y, int ldy) {                        \
        vf acc[R][V];                                                                                            \
        UNROLL for (int j = 0; j < V; j++) {                                                                     \
            vf start = {0};                                                                                      \
            if (bias) start = load(bias + n0 + j * L);                                                           \
            UNROLL for (int r = 0; r < R; r++) acc[r][j] = start;                                                \
        }                                                                                                        \
        const float *w = wt; /* the panel: row stride ldw (its width) */                                         \
        for (int i = 0; i < 3; i++) {                                                                            \
            const int K = in->k[i];                                                                              \
            const float *xr[R];                                                                                  \
            UNROLL for (int r = 0; r < R; r++) xr[r] = in->x[i] + (long)r * in->ld[i];                           \
            for (int k = 0; k < K; k++, w += ldw) {                                                              \
                vf wv[V];                                                                                        \
                UNROLL for (int j = 0; j < V; j++) wv[j] = load(w + j * L);                                      \
                UNROLL for (int r = 0; r < R; r++) {                                                             \
                    vf xb = (vf){0} + xr[r][k];                                                                  \
                    UNROLL for (int j = 0; j < V; j++) acc[r][j] = acc[r][j] + xb * wv[j]; /* one FMA */         \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
        for (int r = 0; r < R; r++)                                                                              \
            for (int j = 0; j < V; j++) {                                                                        \
                int n = nvalid - j * L;                                                                          \
                if (n <= 0) break;                                                                               \
                if (n > L) n = L;                                                                                \
                vf v = acc[r][j];                                                                                \
                if (add) v = load_part(add + r * lda + n0 + j * L, n) + v;                                       \
                if (relu) v = (vf)((vi)v & ~(v < 0)); /* NaN stays NaN, as torch.relu */                          \
                store_part(y + r * ldy + n0 + j * L, v, n);                                                      \
            }                                                                                                    \
    }

BLOCK(4, 4)
BLOCK(4, 1)
BLOCK(2, 4)
BLOCK(2, 1)
BLOCK(1, 4)
BLOCK(1, 1)

typedef void (*block_fn)(const inputs *, const float *, int, int, int, const float *, const float *, int, int,
                         float *, int);

static void rows(int R, const inputs *in, const float *wt, int ldw, int n0, int nvalid, const float *bias,
                 const float *add, int lda, int relu, float *y, int ldy, int wide) {
    static const block_fn narrow_fns[5] = {0, block_1_1, block_2_1, 0, block_4_1};
    static const block_fn wide_fns[5] = {0, block_1_4, block_2_4, 0, block_4_4};
    (wide ? wide_fns : narrow_fns)[R](in, wt, ldw, n0, nvalid, bias, add, lda, relu, y, ldy);
}

/* The floats per vector of this build: the panels' widths are 4 * L and L. */
int vrnn_lanes(void) { return L; }

/* One layer: its transposed weights (wt, in panels: see the top) and bias (ldw entries, or NULL), made once. */
typedef struct {
    int n, ldw, relu;
    int k[3];
    const float *wt, *bias;
} layer;

/* The layer on B rows: x_i (B x k[i], row stride ld_i; NULL where k[i] is 0), add (B x n, row stride lda) or
   NULL, y (B x n, contiguous). Returns 0, or -1 for a layer it cannot take. */
int vrnn_layer(const layer *p, int B, const float *x0, int ld0, const float *x1, int ld1, const float *x2, int ld2,
               const float *add, int lda, float *y) {
    if (B < 0 || p->n < 0 || p->ldw % L || p->ldw < p->n || p->k[0] < 0 || p->k[1] < 0 || p->k[2] < 0 ||
        (p->k[1] && !x1) || (p->k[2] && !x2))
        return -1;
    const long K = (long)p->k[0] + p->k[1] + p->k[2];
    for (int n0 = 0; n0 < p->ldw;) { /* a column block's weights stay in cache across the row groups */
        int wide = n0 + 4 * L <= p->ldw;
        const float *panel = p->wt + n0 * K;
        for (int b = 0; b < B;) {
            int R = B - b >= 4 ? 4 : B - b >= 2 ? 2 : 1;
            inputs in = {{x0 + (long)b * ld0, x1 ? x1 + (long)b * ld1 : 0, x2 ? x2 + (long)b * ld2 : 0},
                         {p->k[0], p->k[1], p->k[2]},
                         {ld0, ld1, ld2}};
            rows(R, &in, panel, wide ? 4 * L : L, n0, p->n - n0, p->bias, add ? add + (long)b * lda : 0, lda,
                 p->relu, y + (long)b * p->n, p->n, wide);
            b += R;
        }
        n0 += wide ? 4 * L : L;
    }
    return 0;
}

/* exp(x) for every lane: x = n ln2 + r with |r| <= ln2 / 2 (n by the round-to-nearest of adding and removing
   1.5 * 2^23), a degree-6 polynomial in r (Cephes' expf coefficients), times 2^n built in the exponent bits.
   Within 2 ulp of exp over the clamped range; every lane by the same operations, so a value's result does not
   depend on the lanes beside it. */
static inline vf vexp(vf x) {
    const vf hi = (vf){0} + 88.0f, lo = (vf){0} - 87.0f;
    x = (vf)(((vi)hi & (x > hi)) | ((vi)x & ~(x > hi))); /* min(x, hi); a NaN stays NaN (its result too) */
    x = (vf)(((vi)lo & (x < lo)) | ((vi)x & ~(x < lo))); /* max(x, lo) */
    const vf shift = (vf){0} + 12582912.0f;                 /* 1.5 * 2^23 */
    vf n = (x * 1.44269504088896341f + shift) - shift;
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = (vf){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

/* tanh: for |x| < 0.625 an odd polynomial (Cephes' tanhf coefficients: no cancellation near 0), else
   (1 - e) / (1 + e) with e = exp(-2|x|), the sign put back. */
static inline vf vtanh(vf x) {
    vi sign = (vi)x & ((vi){0} + (int)0x80000000);
    vf a = (vf)((vi)x & ~sign);
    vf e = vexp(-2.0f * a);
    vf big = (vf)((vi)((1.0f - e) / (1.0f + e)) | sign);
    vf z = x * x;
    vf p = (vf){0} - 5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    vf small = p * z * x + x;
    vi is_small = a < 0.625f;
    return (vf)(((vi)small & is_small) | ((vi)big & ~is_small));
}

/* An LSTM cell on B rows: gates = [x0 x1 x2] W^T + bias (the layer, n = 4H, PyTorch's gate order i, f, g, o) into
   `gates` (B x 4H scratch), then c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c'), into h_out and
   c_out (B x H, contiguous); c has row stride ldc. Returns 0, or -1 as vrnn_layer. */
int vrnn_lstm(const layer *p, int B, const float *x0, int ld0, const float *x1, int ld1, const float *x2, int ld2,
              const float *c, int ldc, float *gates, float *h_out, float *c_out) {
    if (p->relu || p->n % 4) return -1;
    int rc = vrnn_layer(p, B, x0, ld0, x1, ld1, x2, ld2, 0, 0, gates);
    if (rc) return rc;
    const int H = p->n / 4;
    for (int b = 0; b < B; b++) {
        const float *g = gates + (long)b * p->n, *cr = c + (long)b * ldc;
        float *ho = h_out + (long)b * H, *co = c_out + (long)b * H;
        for (int j = 0; j < H; j += L) {
            int m = H - j < L ? H - j : L;
            vf i = vsigmoid(load_part(g + j, m)), f = vsigmoid(load_part(g + H + j, m));
            vf gg = vtanh(load_part(g + 2 * H + j, m)), o = vsigmoid(load_part(g + 3 * H + j, m));
            vf c2 = f * load_part(cr + j, m) + i * gg;
            store_part(co + j, c2, m);
            store_part(ho + j, o * vtanh(c2), m);
        }
    }
    return 0;
}
