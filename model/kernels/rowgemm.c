/* Row-invariant matrix products for the sampling step (model/native.py builds and loads this file).
 *
 *   y[b, n] = relu?( add[b, n] + ( bias[n] + sum over blocks i, then k of x_i[b, k] * W_i[n, k] ) )
 *
 * Every element is computed by the same operations in the same order whatever the batch, the row's place in it
 * and the column block it falls in: the accumulator starts at the bias (or 0), takes one fused multiply-add per
 * k, block after block, k in order; then `add` is added and ReLU applied. So a row gets the same bits alone or in
 * any batch, and on any x86-64 CPU with FMA (vector width only decides how many columns run side by side: the
 * lanes are independent and a fused multiply-add rounds once). Blocking over rows (4, 3 or 2 at a time) reuses the
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
/* rows per block: as many as keep 4 vectors of columns' accumulators, the broadcast and the weights in registers
   (AVX2's 16: 3 rows; AVX-512's 32: 4) */
#if L == 16
#define GROUP 4
#else
#define GROUP 3
#endif
typedef float vf __attribute__((vector_size(L * sizeof(float))));
typedef int vi __attribute__((vector_size(L * sizeof(int))));

static inline vf splat(float x) { /* x in every lane (not 0 + x, which costs an addition and turns -0 into 0) */
    vf v = {x};
    return __builtin_shuffle(v, (vi){0});
}

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
                    vf xb = splat(xr[r][k]);                                                                     \
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
BLOCK(3, 4)
BLOCK(3, 1)
BLOCK(2, 4)
BLOCK(2, 1)
BLOCK(1, 4)
BLOCK(1, 1)

typedef void (*block_fn)(const inputs *, const float *, int, int, int, const float *, const float *, int, int,
                         float *, int);

static void rows(int R, const inputs *in, const float *wt, int ldw, int n0, int nvalid, const float *bias,
                 const float *add, int lda, int relu, float *y, int ldy, int wide) {
    static const block_fn narrow_fns[5] = {0, block_1_1, block_2_1, block_3_1, block_4_1};
    static const block_fn wide_fns[5] = {0, block_1_4, block_2_4, block_3_4, block_4_4};
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
            int R = B - b >= GROUP ? GROUP : B - b >= 2 ? 2 : 1;
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

/* ------------------------------------------------------------------------------------------------------------------
 * The whole sampling step of a VRNN (or RNN) in one call: T steps for B rows, every row by the same operations
 * whatever the batch (the products above, then per-row scalar code), so a row gets the same bits alone or in any
 * batch. model/fused.py describes the model (`net`) and draws the random numbers each step reads.
 *
 * A step from the state (h, c), as VRNN.sample: z = mu_p(h) + std_p(h) * n_z (n_z for VRNN-I), phi_z(z), the decoder
 * over [phi_z(z), h] (h alone for an RNN), the output head's parameters, a draw of x_t (below), phi_x(x_t) and the
 * LSTM over [phi_x(x_t), phi_z(z)] and h. Per row and step it reads `nn` normals (n_z: Z of them for a VRNN, then 2
 * for a pen offset or D for a frame) and `nu` uniforms in [0, 1) (K for the mixture component, when K > 1, then
 * one for the pen bit).
 *
 * The draw (mode 0: a sample, 1: the sample fed back and the drawn component's mean written, 2: the mixture's mean):
 * stds times `factor` (temperature * exp(-bias)), logits times `scale` ((1 + bias) / temperature; a row whose
 * scaled logits are not all finite takes the limit, its largest logits equally likely); component k = argmax p_k / q_k
 * with q_k = -log(1 - u_k) ~ Exp(1) (p_k / q_k is the exponentiated Gumbel-max trick: P(k) = p_k); a pen offset
 * (mu1 + s1 e1, mu2 + s2 (rho e1 + sqrt(1 - rho^2) e2)), a frame mu + s n; the pen bit 1 when u < sigmoid(logit).
 * ------------------------------------------------------------------------------------------------------------------ */
#include <math.h>

#define MAX_LAYERS 4

typedef struct {
    int H, Z, D, W, K, P; /* hidden, latent, frame (3: dx, dy, pen), MLP width, components, head outputs */
    int speech;           /* 1: frames of D (a diagonal Gaussian or mixture); 0: pen offsets and the pen bit */
    int latent, prior;    /* a latent (VRNN), with a learnt prior (0: N(0, I), VRNN-I) */
    int n_phi_x, n_phi_z, n_prior, n_dec;
    const layer *phi_x[MAX_LAYERS], *phi_z[MAX_LAYERS], *prior_net[MAX_LAYERS], *dec[MAX_LAYERS];
    const layer *prior_head, *head, *lstm; /* lstm: blocks [phi_x(x) | phi_z(z) | h] (an RNN: [phi_x(x) | h]) */
    float prior_floor, floor, rho_limit;
} net;

/* An MLP of n layers (ReLU each) on B rows: the first layer over x0 (and x1 when given), the others over the last
   output, ping-ponging between a and b (each B x W); the output's buffer. */
static const float *mlp3(const layer *const *ls, int n, int B, const float *x0, int ld0, const float *x1, int ld1,
                         const float *x2, int ld2, float *a, float *b) {
    vrnn_layer(ls[0], B, x0, ld0, x1, ld1, x2, ld2, 0, 0, a);
    for (int i = 1; i < n; i++) {
        vrnn_layer(ls[i], B, a, ls[i - 1]->n, 0, 0, 0, 0, 0, 0, b);
        float *t = a;
        a = b;
        b = t;
    }
    return a;
}

static const float *mlp(const layer *const *ls, int n, int B, const float *x0, int ld0, const float *x1, int ld1,
                        float *a, float *b) {
    return mlp3(ls, n, B, x0, ld0, x1, ld1, 0, 0, a, b);
}

static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); } /* torch's threshold */

/* The softmax of K logits into w (w may be the logits themselves). */
static void softmax(const float *logits, int K, float *w) {
    float mx = -INFINITY, sum = 0.0f;
    for (int k = 0; k < K; k++) mx = logits[k] > mx ? logits[k] : mx;
    for (int k = 0; k < K; k++) sum += w[k] = expf(logits[k] - mx);
    for (int k = 0; k < K; k++) w[k] /= sum;
}

/* The mixture component of one row: argmax_k p_k / q_k over the scaled logits (see the top); 0 for K = 1; -1 for a
   NaN logit (the row's draw is then NaN, which the service's check of its output rejects). */
static int component(const float *logits, int K, float scale, const float *u, float *p) {
    if (K == 1) return 0;
    int finite = 1;
    float top = -INFINITY;
    for (int k = 0; k < K; k++) {
        if (isnan(logits[k])) return -1;
        p[k] = logits[k] * scale;
        if (!isfinite(p[k])) finite = 0;
        if (logits[k] > top) top = logits[k];
    }
    if (!finite) /* the limit as scale -> inf: the largest logits alike, the others never */
        for (int k = 0; k < K; k++) p[k] = logits[k] == top ? 0.0f : -INFINITY;
    softmax(p, K, p);
    int best = 0;
    float best_r = -1.0f;
    for (int k = 0; k < K; k++) {
        float r = p[k] / -log1pf(-u[k]); /* u = 0: q = 0, r = inf (a NaN, from p = 0, never wins) */
        if (r > best_r) best_r = r, best = k;
    }
    return best;
}

/* One row's draw from its head parameters a (P): x (fed back) and out (written), D each. */
static void draw(const net *m, const float *a, const float *n, const float *u, int mode, float factor, float scale,
                 float *x, float *out, float *tmp) {
    const int K = m->K, D = m->D;
    const float *logits = m->speech ? a + 2 * K * D : a + 5 * K + 1;
    if (mode == 2) { /* the mixture's mean (with the more likely pen state) */
        if (K > 1) softmax(logits, K, tmp);
        else tmp[0] = 1.0f;
        const int dims = m->speech ? D : 2, stride = m->speech ? D : 2;
        for (int d = 0; d < dims; d++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += tmp[k] * a[k * stride + d];
            x[d] = out[d] = s;
        }
        if (!m->speech) x[2] = out[2] = a[5 * K] > 0.0f ? 1.0f : 0.0f;
        return;
    }
    const int k = component(logits, K, scale, u, tmp);
    if (k < 0) {
        for (int d = 0; d < D; d++) x[d] = out[d] = NAN;
        return;
    }
    if (m->speech) {
        const float *mu = a + k * D, *raw = a + K * D + k * D;
        for (int d = 0; d < D; d++) {
            float s = (softplus(raw[d]) + m->floor) * factor;
            x[d] = mu[d] + s * n[d];
            out[d] = mode == 1 ? mu[d] : x[d];
        }
        return;
    }
    const float *mu = a + 2 * k, *raw = a + 2 * K + 2 * k;
    const float s1 = (softplus(raw[0]) + m->floor) * factor, s2 = (softplus(raw[1]) + m->floor) * factor;
    const float rho = tanhf(a[4 * K + k]) * m->rho_limit;
    const float e1 = n[0], e2 = rho * e1 + sqrtf(1.0f - rho * rho) * n[1];
    const float p_pen = 1.0f / (1.0f + expf(-a[5 * K]));
    x[0] = mu[0] + s1 * e1;
    x[1] = mu[1] + s2 * e2;
    x[2] = isnan(p_pen) ? NAN : u[K > 1 ? K : 0] < p_pen ? 1.0f : 0.0f; /* (a NaN logit: NaN, as its offsets) */
    out[0] = mode == 1 ? mu[0] : x[0];
    out[1] = mode == 1 ? mu[1] : x[1];
    out[2] = x[2];
}

/* A step's latent, phi_z(z) into pz_buf (B x W), z = mu_p + std_p * n_z from the prior over [h | extra] (extra, of
   width ld, as a text model's window vector; NULL for none), or n_z itself without a prior (VRNN-I); row b's n_z at
   nrm[b] + off. ping, pong: B x W; zp: B x 2Z; z: B x Z of scratch. */
static const float *latent(const net *m, int B, const float *h, const float *extra, int ld, const float *const *nrm,
                           long off, float *ping, float *pong, float *zp, float *z, float *pz_buf) {
    const int H = m->H, Z = m->Z, W = m->W;
    if (m->prior) {
        const float *hid = mlp3(m->prior_net, m->n_prior, B, h, H, extra, ld, 0, 0, ping, pong);
        vrnn_layer(m->prior_head, B, hid, m->prior_net[m->n_prior - 1]->n, 0, 0, 0, 0, 0, 0, zp);
    }
    for (int b = 0; b < B; b++) {
        const float *nz = nrm[b] + off;
        float *zr = z + (long)b * Z;
        if (!m->prior) {
            for (int j = 0; j < Z; j++) zr[j] = nz[j];
            continue;
        }
        const float *mu = zp + (long)b * 2 * Z, *raw = mu + Z;
        for (int j = 0; j < Z; j++) zr[j] = mu[j] + (softplus(raw[j]) + m->prior_floor) * nz[j];
    }
    const float *o = mlp(m->phi_z, m->n_phi_z, B, z, Z, 0, 0, ping, pong);
    memcpy(pz_buf, o, sizeof(float) * B * W);
    return pz_buf;
}

/* The floats of scratch vrnn_sample needs for B rows. */
long vrnn_sample_scratch(const net *m, int B) {
    return (long)B * (3L * m->W + 3L * m->Z + m->P + 4L * m->H + m->D + 2L * m->K + 16);
}

/* T steps for B rows from the state h, c (B x H each, contiguous; updated in place). Row b reads its step t's
   normals at nrm[b] + t * nrm_step (nn of them) and uniforms at uni[b] + t * uni_step, draws with mode[b], factor[b]
   and scale[b], and writes its frame at out[b] + t * out_step. scratch: at least vrnn_sample_scratch(m, B) floats.
   Returns 0, or -1 for a model it cannot take. */
int vrnn_sample(const net *m, int B, int T, float *h, float *c, const float *const *nrm, long nrm_step,
                const float *const *uni, long uni_step, const int *mode, const float *factor, const float *scale,
                float *const *out, long out_step, float *scratch) {
    const int H = m->H, Z = m->Z, D = m->D, W = m->W, P = m->P;
    if (B < 0 || T < 0 || m->n_phi_x < 1 || m->n_phi_x > MAX_LAYERS || m->n_dec < 1 || m->n_dec > MAX_LAYERS ||
        (m->latent && (m->n_phi_z < 1 || m->n_phi_z > MAX_LAYERS)) ||
        (m->latent && m->prior && (m->n_prior < 1 || m->n_prior > MAX_LAYERS)) || m->head->n != P ||
        m->lstm->n != 4 * H || m->K < 1 || (!m->speech && D != 3))
        return -1;
    /* (every MLP layer is W wide: model/fused.py checks) */
    float *ping = scratch, *pong = ping + (long)B * W, *pz_buf = pong + (long)B * W;
    float *zp = pz_buf + (long)B * W, *z = zp + (long)B * 2 * Z, *a = z + (long)B * Z;
    float *gates = a + (long)B * P, *x = gates + (long)B * 4 * H, *tmp = x + (long)B * D;
    for (int t = 0; t < T; t++) {
        const float *pz = m->latent ? latent(m, B, h, 0, 0, nrm, t * nrm_step, ping, pong, zp, z, pz_buf) : 0;
        const float *hid = pz ? mlp(m->dec, m->n_dec, B, pz, W, h, H, ping, pong)
                              : mlp(m->dec, m->n_dec, B, h, H, 0, 0, ping, pong);
        vrnn_layer(m->head, B, hid, m->dec[m->n_dec - 1]->n, 0, 0, 0, 0, 0, 0, a);
        for (int b = 0; b < B; b++) {
            const float *nx = nrm[b] + t * nrm_step + (m->latent ? Z : 0);
            const float *u = uni[b] + t * uni_step;
            draw(m, a + (long)b * P, nx, u, mode[b], factor[b], scale[b], x + (long)b * D,
                 out[b] + t * out_step, tmp + (long)b * (2 * m->K + 16));
        }
        const float *px = mlp(m->phi_x, m->n_phi_x, B, x, D, 0, 0, ping, pong);
        int rc = pz ? vrnn_lstm(m->lstm, B, px, W, pz, W, h, H, c, H, gates, h, c)
                    : vrnn_lstm(m->lstm, B, px, W, h, H, 0, 0, c, H, gates, h, c);
        if (rc) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------
 * The sampling step of a text-conditioned model (model/conditional.py's TextVRNN) in one call: T steps for B rows,
 * each row writing its own line. A step from the state (h, c, kappa), as TextVRNN.sample:
 *
 *   Graves' window: (a_hat, b_hat, k_hat) = win(h) (C components each), kappa += exp(k_hat), and for the row's
 *   characters u = 1 .. U (and U + 1, one past its last) phi(u) = exp(logsumexp_k(a_hat_k - exp(b_hat_k)
 *   (kappa_k - u)^2)); w = sum_u phi(u) onehot(char_u) (A wide); the row has finished when phi(U + 1) exceeds every
 *   phi(u) (Graves' stopping rule);
 *   then as vrnn_sample with w beside h in every network: z from the prior over [h | w], phi_z(z), the decoder over
 *   [phi_z(z) | h | w], the head's draw, phi_x(x) and the LSTM over [phi_x(x) | phi_z(z) | w] and h (an RNN: no z;
 *   its decoder over [h | w], its LSTM over [phi_x(x) | w]). The LSTM's input blocks come as one: `lstm`'s blocks
 *   are [rnn_in | h], rnn_in a row's [phi_x(x) | phi_z(z) | w] side by side.
 *
 * Row b's characters are codes[b][0 .. len[b]) (indices into the alphabet, 0 <= code < A). done[b] (in and out) is 1
 * once the row's rule has fired; the step at which it first fires in this call is written to ended[b] (t, 0-based;
 * the row's frame of that step is written). The call returns the steps it ran: T, or fewer when after some step's
 * draw every row is done (that step's LSTM update is skipped, as the sampler stops there). phi_out (or NULL): row b
 * writes phi(1 .. len[b]) of step t at phi_out[b] + t * len[b].
 * ------------------------------------------------------------------------------------------------------------------ */

typedef struct {
    net base;           /* base.lstm: blocks [rnn_in | h]; base.prior_net, base.dec: first layers with w as the last block */
    int A, C;           /* alphabet size, window components */
    const layer *win;   /* h -> (a_hat, b_hat, k_hat), 3C */
    int n_enc;          /* the encoder q(z | x, h, w) (a latent model's; text_prime): its MLP over [phi_x(x) | h | w] */
    const layer *enc[MAX_LAYERS], *enc_head;
    float enc_floor;
} text_net;

/* A text model's LSTM input, rows of [phi_x(x) | phi_z(z) | w] (no phi_z(z) when pz is NULL) into rnn_in. */
static void rnn_input(int B, int W, int A, const float *px, const float *pz, const float *w, float *rnn_in) {
    const int R = (pz ? 2 * W : W) + A;
    for (int b = 0; b < B; b++) {
        float *r = rnn_in + (long)b * R;
        memcpy(r, px + (long)b * W, sizeof(float) * W);
        if (pz) memcpy(r + W, pz + (long)b * W, sizeof(float) * W);
        memcpy(r + (pz ? 2 * W : W), w + (long)b * A, sizeof(float) * A);
    }
}

long text_sample_scratch(const text_net *m, int B) {
    const net *n = &m->base;
    return vrnn_sample_scratch(n, B) + (long)B * (3L * m->C + m->C + 3L * n->W + 2L * m->A + 16);
}

/* One row's window: wp (3C: a_hat, b_hat, k_hat), kappa (C, updated), its characters; w (A) written; returns
   whether the rule fires. beta: C floats of scratch. The sum over the components runs for L positions u at a time,
   on the kernel's vexp (every lane by the same operations: a row's numbers do not depend on the batch); each
   position's phi = exp(max + log(sum)) in scalar libm, as torch.logsumexp's exp, so that a window far from every
   character still gives 0 where it underflows. */
static int text_window(const float *wp, int C, float *kappa, const int *codes, int U, int A, float *w, float *beta,
                       float *phi_row) {
    for (int k = 0; k < C; k++) {
        kappa[k] += expf(wp[2 * C + k]);
        beta[k] = expf(wp[C + k]);
    }
    for (int a = 0; a < A; a++) w[a] = 0.0f;
    float top = -INFINITY, end = 0.0f;
    vf iota;
    for (int j = 0; j < L; j++) iota[j] = (float)j;
    for (int u0 = 1; u0 <= U + 1; u0 += L) {
        const vf u = splat((float)u0) + iota;
        vf mx = splat(-INFINITY);
        for (int k = 0; k < C; k++) {
            const vf d = splat(kappa[k]) - u;
            const vf l = splat(wp[k]) - splat(beta[k]) * (d * d);
            mx = (vf)(((vi)l & (l > mx)) | ((vi)mx & ~(l > mx)));
        }
        vf sum = {0};
        for (int k = 0; k < C; k++) {
            const vf d = splat(kappa[k]) - u;
            sum = sum + vexp(splat(wp[k]) - splat(beta[k]) * (d * d) - mx);
        }
        const int n = U + 1 - u0 + 1 < L ? U + 1 - u0 + 1 : L;
        for (int j = 0; j < n; j++) {
            const float phi = isfinite(mx[j]) ? expf(mx[j] + logf(sum[j])) : 0.0f;
            const int at = u0 + j;
            if (at <= U) {
                w[codes[at - 1]] += phi;
                if (phi_row) phi_row[at - 1] = phi;
                top = phi > top ? phi : top;
            } else {
                end = phi;
            }
        }
    }
    return end > top;
}

int text_sample(const text_net *m, int B, int T, float *h, float *c, float *kappa, const int *const *codes,
                const int *len, int *done, int *ended, const float *const *nrm, long nrm_step,
                const float *const *uni, long uni_step, const int *mode, const float *factor, const float *scale,
                float *const *out, long out_step, float *const *phi_out, float *scratch) {
    const net *n = &m->base;
    const int H = n->H, Z = n->Z, D = n->D, W = n->W, P = n->P, A = m->A, C = m->C;
    if (B < 0 || T < 0 || n->speech || D != 3 || A < 1 || C < 1 || m->win->n != 3 * C || n->n_phi_x < 1 ||
        n->n_phi_x > MAX_LAYERS || n->n_dec < 1 || n->n_dec > MAX_LAYERS ||
        (n->latent && (n->n_phi_z < 1 || n->n_phi_z > MAX_LAYERS)) ||
        (n->latent && n->prior && (n->n_prior < 1 || n->n_prior > MAX_LAYERS)) || n->head->n != P ||
        n->lstm->n != 4 * H || n->K < 1)
        return -1;
    for (int b = 0; b < B; b++)
        if (len[b] < 1) return -1;
    const int R = (n->latent ? 2 * W : W) + A; /* rnn_in's width */
    float *ping = scratch, *pong = ping + (long)B * W, *pz_buf = pong + (long)B * W;
    float *zp = pz_buf + (long)B * W, *z = zp + (long)B * 2 * Z, *a = z + (long)B * Z;
    float *gates = a + (long)B * P, *x = gates + (long)B * 4 * H, *tmp = x + (long)B * D;
    float *wp = tmp + (long)B * (2 * n->K + 16), *beta = wp + (long)B * 3 * C, *rnn_in = beta + (long)B * C;
    float *w = rnn_in + (long)B * R;
    for (int t = 0; t < T; t++) {
        vrnn_layer(m->win, B, h, H, 0, 0, 0, 0, 0, 0, wp);
        for (int b = 0; b < B; b++) {
            float *wr = w + (long)b * A;
            float *phi_row = phi_out ? phi_out[b] + (long)t * len[b] : 0;
            if (text_window(wp + (long)b * 3 * C, C, kappa + (long)b * C, codes[b], len[b], A, wr, beta + (long)b * C,
                            phi_row) &&
                !done[b]) {
                done[b] = 1;
                ended[b] = t;
            }
        }
        const float *pz = n->latent ? latent(n, B, h, w, A, nrm, t * nrm_step, ping, pong, zp, z, pz_buf) : 0;
        const float *hid = pz ? mlp3(n->dec, n->n_dec, B, pz, W, h, H, w, A, ping, pong)
                              : mlp3(n->dec, n->n_dec, B, h, H, w, A, 0, 0, ping, pong);
        vrnn_layer(n->head, B, hid, n->dec[n->n_dec - 1]->n, 0, 0, 0, 0, 0, 0, a);
        for (int b = 0; b < B; b++) {
            const float *nx = nrm[b] + t * nrm_step + (n->latent ? Z : 0);
            const float *u = uni[b] + t * uni_step;
            draw(n, a + (long)b * P, nx, u, mode[b], factor[b], scale[b], x + (long)b * D, out[b] + t * out_step,
                 tmp + (long)b * (2 * n->K + 16));
        }
        int all = 1;
        for (int b = 0; b < B; b++) all &= done[b];
        if (all) return t + 1;
        const float *px = mlp(n->phi_x, n->n_phi_x, B, x, D, 0, 0, ping, pong);
        rnn_input(B, W, A, px, pz, w, rnn_in);
        int rc = vrnn_lstm(n->lstm, B, rnn_in, R, h, H, 0, 0, c, H, gates, h, c);
        if (rc) return rc;
    }
    return T;
}

/* Reading a prime (style priming, as TextVRNN.begin_lines): T steps for B rows of the posterior pass over the given
   offsets x (T x D, the same line for every row: x[t] is step t's), from the state (h, c, kappa) (updated in place):
   the window as text_sample's, z = mu_q + std_q * eps from the encoder over [phi_x(x_t) | h | w] (row b's eps of step
   t at eps[b] + t * Z), phi_z(z) and the LSTM over [phi_x(x_t) | phi_z(z) | w] and h (an RNN: no z). Returns 0, or -1
   for a model it cannot take. scratch: text_sample_scratch(m, B) floats. */
int text_prime(const text_net *m, int B, int T, float *h, float *c, float *kappa, const int *const *codes,
               const int *len, const float *x, const float *const *eps, float *scratch) {
    const net *n = &m->base;
    const int H = n->H, Z = n->Z, D = n->D, W = n->W, A = m->A, C = m->C;
    if (B < 0 || T < 0 || n->speech || D != 3 || A < 1 || C < 1 || m->win->n != 3 * C || n->n_phi_x < 1 ||
        n->n_phi_x > MAX_LAYERS || n->lstm->n != 4 * H ||
        (n->latent && (m->n_enc < 1 || m->n_enc > MAX_LAYERS || !m->enc_head || m->enc_head->n != 2 * Z ||
                       n->n_phi_z < 1 || n->n_phi_z > MAX_LAYERS)))
        return -1;
    for (int b = 0; b < B; b++)
        if (len[b] < 1) return -1;
    const int R = (n->latent ? 2 * W : W) + A;
    float *ping = scratch, *pong = ping + (long)B * W, *px = pong + (long)B * W;
    float *zp = px + (long)B * W, *z = zp + (long)B * 2 * Z, *gates = z + (long)B * Z;
    float *wp = gates + (long)B * 4 * H, *beta = wp + (long)B * 3 * C, *rnn_in = beta + (long)B * C;
    float *w = rnn_in + (long)B * R;
    for (int t = 0; t < T; t++) {
        vrnn_layer(m->win, B, h, H, 0, 0, 0, 0, 0, 0, wp);
        for (int b = 0; b < B; b++)
            text_window(wp + (long)b * 3 * C, C, kappa + (long)b * C, codes[b], len[b], A, w + (long)b * A,
                        beta + (long)b * C, 0);
        const float *o = mlp(n->phi_x, n->n_phi_x, B, x + (long)t * D, 0, 0, 0, ping, pong); /* ld 0: one line */
        memcpy(px, o, sizeof(float) * B * W);
        const float *pz = 0;
        if (n->latent) {
            const float *hid = mlp3(m->enc, m->n_enc, B, px, W, h, H, w, A, ping, pong);
            vrnn_layer(m->enc_head, B, hid, m->enc[m->n_enc - 1]->n, 0, 0, 0, 0, 0, 0, zp);
            for (int b = 0; b < B; b++) {
                const float *e = eps[b] + (long)t * Z, *mu = zp + (long)b * 2 * Z, *raw = mu + Z;
                float *zr = z + (long)b * Z;
                for (int j = 0; j < Z; j++) zr[j] = mu[j] + (softplus(raw[j]) + m->enc_floor) * e[j];
            }
            pz = mlp(n->phi_z, n->n_phi_z, B, z, Z, 0, 0, ping, pong);
        }
        rnn_input(B, W, A, px, pz, w, rnn_in);
        int rc = vrnn_lstm(n->lstm, B, rnn_in, R, h, H, 0, 0, c, H, gates, h, c);
        if (rc) return rc;
    }
    return 0;
}
