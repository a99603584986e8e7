/*
 * Mamba-1 selective scan on the CPU: forward and hand-written backward.
 *
 * Layout (all row-major, contiguous unless said otherwise):
 *   x, dt, y, dy, dx, ddt : [b, t, d]     (d = d_inner channels)
 *   z, dz                 : [b, t, d] or NULL; z and dz rows may be strided (zs, dzs): optional gate,
 *                           yg = y * silu(z) is then written/differentiated in the same pass
 *   At                    : [n, d]        (A transposed, so a block of channels is contiguous)
 *   Bm, Cm                : [b, t, n]     (rows may be strided: bs, cs)
 *   Dv, dtb               : [d] or NULL
 *   states                : [b, t, d, n] or NULL (written only when asked)
 *
 * The step size is the dt input plus the optional bias dtb, passed through softplus when
 * the softplus flag is set (Mamba's dt_proj bias and activation, fused so that neither
 * needs a pass of its own; ddt is then the gradient with respect to the raw dt input).
 * Recurrence per channel c and state slot j, with s_t = [softplus](dt_t + dtb):
 *   h_t[c,j] = exp(s_t[c] * A[c,j]) * h_{t-1}[c,j] + s_t[c] * x_t[c] * B_t[j]
 *   y_t[c]   = sum_j h_t[c,j] * C_t[j] + D[c] * x_t[c]
 *
 * Work is split into jobs (one batch row x one block of BLK channels: 16 with AVX-512, 8 with AVX2,
 * 4 on baseline x86-64; the caller pads d to a multiple of 16). A job keeps its BLK x n state in a
 * small local buffer of vectors and walks time forward, so everything it
 * touches per step stays in L1. Arithmetic uses GCC vector extensions, one
 * register per block of BLK floats. The backward of
 * a job first recomputes the states and decays into per-thread buffers
 * [t, n, BLK] (256 KiB each for t = 256, n = 16), then runs the adjoint
 * recurrence in reverse time. Reductions over channels (dB, dC) are summed
 * lane-wise per batch row and reduced once per row (threads own whole rows
 * when b >= nthreads); reductions over the batch (dA, dD) go into per-thread
 * partial buffers that the caller sums.
 *
 * The same code is instantiated for float and for double (libm exp per lane; used by the float64
 * references). For float the state decays exp(dt A) are a vectorised 2^w (a job multiplies its A by log2(e)
 * once; then one multiply, a degree-6 polynomial on the fraction, < 1.7 ulp, and the scaling by vscalefps on
 * AVX-512, by an integer add to the exponent field on AVX2); the other exps (softplus, sigmoid) keep a
 * Cody-Waite reduction and a degree-7 polynomial (~1 ulp). The instruction set is chosen at build time
 * (_ckernel.py: UNIVERSALITY_KERNEL_ISA = native, avx2 or generic).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* Version of the exported functions' signatures. _ckernel.py refuses a library whose
   kernel_abi_version() differs from its own KERNEL_ABI: bump both whenever an exported
   signature changes. */
#define KERNEL_ABI 3

int kernel_abi_version(void) { return KERNEL_ABI; }

/* Channels per job = lanes of one float vector register: 16 with AVX-512, 8 with AVX/AVX2, 4 otherwise
   (SSE2). A vector wider than the machine's registers is legal GCC but compiles to stack round trips
   (~5x slower on AVX2), so the width follows the target. The callers pad d to a multiple of 16, which
   every choice divides. */
#if defined(__AVX512F__)
#define BLK 16
#elif defined(__AVX__)
#define BLK 8
#else
#define BLK 4
#endif
#define PF 8 /* rows fetched ahead by the scan jobs */
/* rows of dt fetched ahead by the step-size loops: an iteration there is short (softplus: ~50 instructions),
   so the out-of-order window holds only a few of them and, without a fetch far ahead, waits for each row */
#define PF_STEP 32

typedef float vf __attribute__((vector_size(BLK * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(BLK * sizeof(int32_t))));
typedef double vd __attribute__((vector_size(BLK * sizeof(double))));

/* exp(r) for |r| <= ln2/2 by a degree-7 polynomial (~1 ulp; the general exp). */
static inline vf exp_reduced_vf(vf r) {
    vf p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r + 1.0f;
}

/* 2^r for |r| <= 1/2 by a degree-6 polynomial (relative error < 1.7 ulp in float arithmetic; coefficients
   fitted for the relative error on [-1/2, 1/2]). */
static inline vf exp2_reduced_vf(vf r) {
    vf p = r * 1.5353361960e-4f + 1.3398875017e-3f;
    p = p * r + 9.6184369177e-3f;
    p = p * r + 5.5503323674e-2f;
    p = p * r + 2.4022647738e-1f;
    p = p * r + 6.9314718246e-1f;
    return p * r + 1.0f;
}

#if defined(__AVX512F__)
static inline vf exp2_vf(vf w) {
    /* 2^w lane-wise: w = k + r with k = round(w) (r = w - k is exact), 2^r by the polynomial, scaled by 2^k
       with vscalefps (which also gives 0 / inf outside the float range). The clamp maps -inf to 0; NaN passes
       (vmaxps returns its second operand when one is NaN). */
    const __m512 v = _mm512_max_ps(_mm512_set1_ps(-151.0f), (__m512)w);
    const __m512 k = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return (vf)_mm512_scalef_ps((__m512)exp2_reduced_vf((vf)_mm512_sub_ps(v, k)), k);
}

static inline vf exp_vf(vf v) {
    /* exp(v) lane-wise: v = k ln2 + r with k = round(v / ln2), exp(r) by the polynomial, then
       scaled by 2^k with vscalefps (which also gives 0 / inf outside the float range). The clamp only
       keeps k*ln2 exact enough; every v below -104 or above 89 is already 0 or inf. */
    __m512 w = _mm512_min_ps(_mm512_max_ps((__m512)v, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(w, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    w = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), w);
    w = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.42860682030941723e-6f), w);
    return (vf)_mm512_scalef_ps((__m512)exp_reduced_vf((vf)w), k);
}
#elif defined(__AVX2__) && defined(__FMA__)
static inline vf exp2_vf(vf w) {
    /* 2^w lane-wise, 6 instructions besides the polynomial: w is clamped to [-126, 127]; adding 1.5 * 2^23
       rounds it to k = round(w) held in the low mantissa bits, so that sum shifted left by 23 is k << 23
       (the sum's own exponent bits shift out) and subtracting 1.5 * 2^23 again gives k as a float;
       2^(w - k) by the polynomial (in [0.70, 1.42]), then k is added to its exponent field as an integer.
       w <= -126 (and -inf) gives 2^-126 ~ 1.2e-38 instead of a smaller number or 0; NaN passes (vmaxps and
       vminps return their second operand when one is NaN, and the NaN's shifted bits are 0). */
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 v = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-126.0f), (__m256)w));
    const __m256 shifted = _mm256_add_ps(v, magic);
    const __m256 k = _mm256_sub_ps(shifted, magic);
    const __m256i scale = _mm256_slli_epi32(_mm256_castps_si256(shifted), 23);
    const vf p = exp2_reduced_vf((vf)_mm256_sub_ps(v, k));
    return (vf)_mm256_add_epi32(_mm256_castps_si256((__m256)p), scale);
}

static inline vf exp_vf(vf v) {
    /* exp(v) lane-wise for v clamped to [-87.3, 88] (below, exp is under the normal range; the top keeps
       2^k finite): v = k ln2 + r, |r| <= ln2/2, exp(r) by the polynomial, 2^k from the bits. */
    __m256 w = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.3f), (__m256)v));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(w, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    w = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), w);
    w = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.42860682030941723e-6f), w);
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return exp_reduced_vf((vf)w) * (vf)_mm256_castsi256_ps(bits);
}
#else
/* v clamped lane-wise to [lo, hi] */
static inline vf clamp_vf(vf v, float lo_s, float hi_s) {
    const vf zero = {0};
    const vf lo = zero + lo_s, hi = zero + hi_s;
    vi below = v < lo, above = v > hi;
    v = (vf)(((vi)v & ~below) | ((vi)lo & below));
    return (vf)(((vi)v & ~above) | ((vi)hi & above));
}

static const float magic = 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds to the nearest integer */

static inline vf exp2_vf(vf w) {
    /* 2^w lane-wise for w clamped to [-126, 127]: w = k + r, |r| <= 1/2, 2^r by the polynomial, 2^k from the bits. */
    w = clamp_vf(w, -126.0f, 127.0f);
    const vf k = (w + magic) - magic;
    vi bits = (__builtin_convertvector(k, vi) + 127) << 23;
    return exp2_reduced_vf(w - k) * (vf)bits;
}

static inline vf exp_vf(vf v) {
    /* exp(v) lane-wise for v clamped to [-87, 88]: v = k ln2 + r, |r| <= ln2/2, exp(r) by the polynomial. */
    v = clamp_vf(v, -87.0f, 88.0f);
    vf k = (v * 1.44269504088896341f + magic) - magic;
    vf r = v - k * 0.693145751953125f;
    r = r - k * 1.42860682030941723e-6f;
    vi bits = (__builtin_convertvector(k, vi) + 127) << 23;
    return exp_reduced_vf(r) * (vf)bits;
}
#endif

static inline vf softplus_vf(vf v) {
    /* log(1 + exp(v)) = max(v, 0) + log1p(u), u = exp(-|v|) in (0, 1]; log1p(u) = 2 atanh(s) with
       s = u / (2 + u) <= 1/3, summed as 2 s (1 + s^2/3 + ... + s^12/13) (relative error < 2e-8). */
    const vf av = (vf)((vi)v & 0x7fffffff);
    const vf u = exp_vf(-av);
    const vf s = u / (u + 2.0f), s2 = s * s;
    vf p = s2 * (1.0f / 13) + 1.0f / 11;
    p = p * s2 + 1.0f / 9;
    p = p * s2 + 1.0f / 7;
    p = p * s2 + 1.0f / 5;
    p = p * s2 + 1.0f / 3;
    p = p * s2 + 1.0f;
    return (v + av) * 0.5f + 2.0f * s * p;
}

static inline vd exp_vd(vd v) {
    vd out;
    for (int i = 0; i < BLK; i++) out[i] = exp(v[i]);
    return out;
}

static inline vd softplus_vd(vd v) {
    vd out;
    for (int i = 0; i < BLK; i++) out[i] = v[i] > 0 ? v[i] + log1p(exp(-v[i])) : log1p(exp(v[i]));
    return out;
}

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#define DEFINE_SCAN(T, V, SUF, EXPV, SOFTPLUSV, DECAYV, DECAY_SCALE)                                                                      \
static inline V load_##SUF(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }                                           \
static inline void store_##SUF(T *p, V v) { memcpy(p, &v, sizeof v); }                                                       \
static inline T hsum_##SUF(V v) { T s = 0; for (int i = 0; i < BLK; i++) s += v[i]; return s; }                              \
static inline V sigmoid_##SUF(V v) { const V zero = {0}; return (zero + 1) / (zero + 1 + EXPV(-v)); }                        \
                                                                                                                             \
/* Step size of one row of a job: dt (+ bias) (-> softplus); *slope = d step / d dt (1 without softplus). */                 \
static inline V step_##SUF(const T *dt, const T *dtb, int64_t d0, int softplus, V *slope) {                                  \
    const V zero = {0};                                                                                                      \
    V raw = load_##SUF(dt);                                                                                                  \
    if (dtb) raw += load_##SUF(dtb + d0);                                                                                    \
    if (!softplus) { *slope = zero + 1; return raw; }                                                                        \
    *slope = sigmoid_##SUF(raw);                                                                                             \
    return SOFTPLUSV(raw);                                                                                                   \
}                                                                                                                            \
                                                                                                                             \
static void fwd_job_##SUF(const T *x, const T *dt, const T *dtb, int softplus, const V *A, const T *Bm, const T *Cm,         \
                          int64_t bs, int64_t cs, const T *Dv, const T *z, int64_t zs, T *y, T *yg, T *states,               \
                          int64_t bi, int64_t d0, int64_t t, int64_t d, int64_t n, V *h, V *DV, V *G) {                      \
    const V zero = {0};                                                                                                      \
    for (int64_t j = 0; j < n; j++) h[j] = zero;                                                                             \
    const V Dvec = Dv ? load_##SUF(Dv + d0) : zero;                                                                          \
    /* step sizes and gates silu(z) first, in a loop of independent rows: their latency (softplus, the                      \
       divisions) then overlaps, and the recurrence's rows below end with one multiply */                                   \
    for (int64_t ti = 0; ti < t; ti++) {                                                                                     \
        const int64_t row = bi * t + ti;                                                                                     \
        if (ti + PF_STEP < t) {                                                                                              \
            __builtin_prefetch(dt + (row + PF_STEP) * d + d0);                                                               \
            if (z) __builtin_prefetch(z + (row + PF_STEP) * zs + d0);                                                        \
        }                                                                                                                    \
        V slope;                                                                                                             \
        DV[ti] = step_##SUF(dt + row * d + d0, dtb, d0, softplus, &slope);                                                   \
        if (z) { const V zv = load_##SUF(z + row * zs + d0); G[ti] = zv * sigmoid_##SUF(zv); }                               \
    }                                                                                                                        \
    for (int64_t ti = 0; ti < t; ti++) {                                                                                     \
        const int64_t row = bi * t + ti;                                                                                     \
        if (ti + PF < t) { /* rows are d apart: fetch ahead by hand, the hardware prefetchers do not */                      \
            const int64_t ahead = row + PF;                                                                                  \
            __builtin_prefetch(x + ahead * d + d0);                                                                          \
            __builtin_prefetch(Bm + ahead * bs); __builtin_prefetch(Cm + ahead * cs);                                        \
        }                                                                                                                    \
        const V xv = load_##SUF(x + row * d + d0), dv = DV[ti];                                                              \
        const V dx = dv * xv;                                                                                                \
        const T *Br = Bm + row * bs, *Cr = Cm + row * cs;                                                                    \
        /* two partial sums of the readout (even and odd state slots) halve its chain of dependent adds */                  \
        V acc = Dvec * xv, acc2 = zero;                                                                                      \
        int64_t j = 0;                                                                                                       \
        for (; j + 1 < n; j += 2) {                                                                                          \
            const V h0 = DECAYV(dv * A[j]) * h[j] + dx * Br[j];                                                              \
            const V h1 = DECAYV(dv * A[j + 1]) * h[j + 1] + dx * Br[j + 1];                                                  \
            h[j] = h0; h[j + 1] = h1;                                                                                        \
            acc += h0 * Cr[j];                                                                                               \
            acc2 += h1 * Cr[j + 1];                                                                                          \
        }                                                                                                                    \
        if (j < n) {                                                                                                         \
            const V hv = DECAYV(dv * A[j]) * h[j] + dx * Br[j];                                                              \
            h[j] = hv;                                                                                                       \
            acc += hv * Cr[j];                                                                                               \
        }                                                                                                                    \
        acc += acc2;                                                                                                         \
        if (states) {                                                                                                        \
            T *sr = states + (row * d + d0) * n;                                                                             \
            for (int k = 0; k < BLK; k++)                                                                                    \
                for (int64_t jj = 0; jj < n; jj++) sr[k * n + jj] = h[jj][k];                                                \
        }                                                                                                                    \
        if (y) store_##SUF(y + row * d + d0, acc);                                                                           \
        if (yg) store_##SUF(yg + row * d + d0, acc * G[ti]);                                                                 \
    }                                                                                                                        \
}                                                                                                                            \
                                                                                                                             \
void scan_fwd_##SUF(const T *x, const T *dt, const T *dtb, int softplus, const T *At, const T *Bm, const T *Cm,              \
                    int64_t bs, int64_t cs, const T *Dv, const T *z, int64_t zs, T *y, T *yg, T *states, int64_t b,          \
                    int64_t t, int64_t d, int64_t n, int nthreads) {                                                         \
    const int64_t nblk = d / BLK;                                                                                            \
    _Pragma("omp parallel num_threads(nthreads)")                                                                            \
    {                                                                                                                        \
        V *h = (V *)aligned_alloc(64, sizeof(V) * (size_t)n);                                                                \
        V *A = (V *)aligned_alloc(64, sizeof(V) * (size_t)n);                                                                \
        V *DV = (V *)aligned_alloc(64, sizeof(V) * (size_t)t);                                                               \
        V *G = (V *)aligned_alloc(64, sizeof(V) * (size_t)t);                                                                \
        int64_t loaded = -1;                                                                                                 \
        _Pragma("omp for schedule(dynamic, 4)")                                                                              \
        for (int64_t job = 0; job < b * nblk; job++) {                                                                       \
            const int64_t bi = job / nblk, d0 = (job % nblk) * BLK;                                                          \
            if (loaded != d0) {                                                                                              \
                for (int64_t j = 0; j < n; j++) A[j] = load_##SUF(At + j * d + d0) * (T)DECAY_SCALE;                                \
                loaded = d0;                                                                                                 \
            }                                                                                                                \
            fwd_job_##SUF(x, dt, dtb, softplus, A, Bm, Cm, bs, cs, Dv, z, zs, y, yg, states, bi, d0, t, d, n, h, DV, G);     \
        }                                                                                                                    \
        free(h); free(A); free(DV); free(G);                                                                                 \
    }                                                                                                                        \
}                                                                                                                            \
                                                                                                                             \
/* Per-thread scratch of the backward: states and decays [t, n], lane-wise dB/dC sums [t, n],                                \
   step sizes and their slopes [t], the gate's factors silu(z) and silu'(z) [t], adjoint and dA                              \
   accumulators [n], the job's A [n]. */                                                                                     \
typedef struct {                                                                                                             \
    V *H, *Ad, *LB, *LC, *DV, *SL, *G1, *G2, *g, *dAacc, *A, *A2;                                                            \
} bwd_scratch_##SUF;                                                                                                         \
                                                                                                                             \
static void bwd_job_##SUF(const T *x, const T *dt, const T *dtb, int softplus, const T *Bm, const T *Cm, int64_t bs,         \
                          int64_t cs, const T *Dv, const T *z, int64_t zs, const T *dy, T *dxo, T *ddto, T *dzo, int64_t dzs,\
                          T *dAp, T *dDp, T *ddtbp, int64_t bi, int64_t d0, int64_t t, int64_t d, int64_t n,                 \
                          const bwd_scratch_##SUF *s) {                                                                      \
    const V zero = {0};                                                                                                      \
    V *H = s->H, *Ad = s->Ad, *g = s->g, *dAacc = s->dAacc, *LB = s->LB, *LC = s->LC;                                        \
    const V *A = s->A, *A2 = s->A2;                                                                                          \
    /* 1. step sizes DV[ti] and slopes SL[ti], and the gate's factors G1 = silu(z), G2 = silu'(z), in a loop of             \
       independent rows (their exps and divisions overlap); then states and decays H[ti * n + j], Ad[ti * n + j] */         \
    for (int64_t ti = 0; ti < t; ti++) {                                                                                     \
        const int64_t row = bi * t + ti;                                                                                     \
        if (ti + PF_STEP < t) {                                                                                              \
            __builtin_prefetch(dt + (row + PF_STEP) * d + d0);                                                               \
            if (z) __builtin_prefetch(z + (row + PF_STEP) * zs + d0);                                                        \
        }                                                                                                                    \
        s->DV[ti] = step_##SUF(dt + row * d + d0, dtb, d0, softplus, &s->SL[ti]);                                            \
        if (z) {                                                                                                             \
            const V zv = load_##SUF(z + row * zs + d0), sg = sigmoid_##SUF(zv);                                              \
            s->G1[ti] = zv * sg;                                                                                             \
            s->G2[ti] = sg * (1 + zv * (1 - sg));                                                                            \
        }                                                                                                                    \
    }                                                                                                                        \
    for (int64_t ti = 0; ti < t; ti++) {                                                                                     \
        const int64_t row = bi * t + ti;                                                                                     \
        if (ti + PF < t) {                                                                                                   \
            const int64_t ahead = row + PF;                                                                                  \
            __builtin_prefetch(x + ahead * d + d0);                                                                          \
            __builtin_prefetch(Bm + ahead * bs);                                                                             \
        }                                                                                                                    \
        const V xv = load_##SUF(x + row * d + d0), dv = s->DV[ti];                                                           \
        const V dx = dv * xv;                                                                                                \
        const T *Br = Bm + row * bs;                                                                                         \
        V *Hc = H + ti * n, *Ac = Ad + ti * n;                                                                               \
        for (int64_t j = 0; j < n; j++) {                                                                                    \
            const V a = DECAYV(dv * A2[j]);                                                                                  \
            Ac[j] = a;                                                                                                       \
            Hc[j] = ti > 0 ? a * Hc[j - n] + dx * Br[j] : dx * Br[j];                                                        \
        }                                                                                                                    \
    }                                                                                                                        \
    /* 2. adjoint recurrence in reverse time; g carries dL/dh_t back through the decay. The sums over the state            \
       slots (y, the step's gradient, B's contraction) each run as two partial sums (even and odd slots), which            \
       halves their chains of dependent adds. */                                                                            \
    for (int64_t j = 0; j < n; j++) { g[j] = zero; dAacc[j] = zero; }                                                        \
    const V Dvec = Dv ? load_##SUF(Dv + d0) : zero;                                                                          \
    V dDacc = zero, dbacc = zero;                                                                                            \
    for (int64_t ti = t - 1; ti >= 0; ti--) {                                                                                \
        const int64_t row = bi * t + ti;                                                                                     \
        if (ti >= PF) {                                                                                                      \
            const int64_t ahead = row - PF;                                                                                  \
            __builtin_prefetch(x + ahead * d + d0); __builtin_prefetch(dy + ahead * d + d0);                                 \
            __builtin_prefetch(Bm + ahead * bs); __builtin_prefetch(Cm + ahead * cs);                                        \
            __builtin_prefetch(dxo + ahead * d + d0, 1); __builtin_prefetch(ddto + ahead * d + d0, 1);                       \
            if (z) __builtin_prefetch(dzo + ahead * dzs + d0, 1);                                                            \
        }                                                                                                                    \
        const V xv = load_##SUF(x + row * d + d0), dv = s->DV[ti];                                                           \
        const V dyg = load_##SUF(dy + row * d + d0);                                                                         \
        /* gated output yg = y * silu(z): dy = dyg * silu(z); dz = dyg * y * silu'(z), y summed in the loop below */        \
        const V dyv = z ? dyg * s->G1[ti] : dyg;                                                                             \
        const V dx = dv * xv;                                                                                                \
        const T *Br = Bm + row * bs, *Cr = Cm + row * cs;                                                                    \
        const V *Hc = H + ti * n, *Ac = Ad + ti * n;                                                                         \
        V gB = zero, ddta = zero, yv = Dvec * xv, gB2 = zero, ddta2 = zero, yv2 = zero;                                      \
        V *LBr = LB + ti * n, *LCr = LC + ti * n;                                                                            \
        int64_t j = 0;                                                                                                       \
        for (; j + 1 < n; j += 2) {                                                                                          \
            const V gk = g[j] + dyv * Cr[j], gk1 = g[j + 1] + dyv * Cr[j + 1];                                               \
            const V a = Ac[j], hv = Hc[j], a1 = Ac[j + 1], hv1 = Hc[j + 1];                                                  \
            const V ga = ti > 0 ? gk * Hc[j - n] * a : zero;                                                                 \
            const V ga1 = ti > 0 ? gk1 * Hc[j + 1 - n] * a1 : zero;                                                          \
            yv += hv * Cr[j]; yv2 += hv1 * Cr[j + 1];                                                                        \
            LCr[j] += dyv * hv; LCr[j + 1] += dyv * hv1;                                                                     \
            LBr[j] += gk * dx; LBr[j + 1] += gk1 * dx;                                                                       \
            ddta += ga * A[j]; ddta2 += ga1 * A[j + 1];                                                                      \
            gB += gk * Br[j]; gB2 += gk1 * Br[j + 1];                                                                        \
            dAacc[j] += ga * dv; dAacc[j + 1] += ga1 * dv;                                                                   \
            g[j] = gk * a; g[j + 1] = gk1 * a1;                                                                              \
        }                                                                                                                    \
        if (j < n) {                                                                                                         \
            const V gk = g[j] + dyv * Cr[j];                                                                                 \
            const V a = Ac[j], hv = Hc[j];                                                                                   \
            const V ga = ti > 0 ? gk * Hc[j - n] * a : zero;                                                                 \
            yv += hv * Cr[j];                                                                                                \
            LCr[j] += dyv * hv;                                                                                              \
            LBr[j] += gk * dx;                                                                                               \
            ddta += ga * A[j];                                                                                               \
            gB += gk * Br[j];                                                                                                \
            dAacc[j] += ga * dv;                                                                                             \
            g[j] = gk * a;                                                                                                   \
        }                                                                                                                    \
        gB += gB2; ddta += ddta2; yv += yv2;                                                                                 \
        if (z) store_##SUF(dzo + row * dzs + d0, dyg * yv * s->G2[ti]);                                                      \
        store_##SUF(dxo + row * d + d0, gB * dv + Dvec * dyv);                                                               \
        const V graw = (ddta + gB * xv) * s->SL[ti];                                                                         \
        store_##SUF(ddto + row * d + d0, graw);                                                                              \
        dbacc += graw;                                                                                                       \
        dDacc += dyv * xv;                                                                                                   \
    }                                                                                                                        \
    for (int64_t j = 0; j < n; j++) store_##SUF(dAp + j * d + d0, load_##SUF(dAp + j * d + d0) + dAacc[j]);                  \
    store_##SUF(dDp + d0, load_##SUF(dDp + d0) + dDacc);                                                                     \
    if (ddtbp) store_##SUF(ddtbp + d0, load_##SUF(ddtbp + d0) + dbacc);                                                      \
}                                                                                                                            \
                                                                                                                             \
static void flush_lanes_##SUF(const V *LB, const V *LC, T *dBp, T *dCp, int64_t bi, int64_t t, int64_t n,                    \
                              int assign) {                                                                                  \
    for (int64_t i = 0; i < t * n; i++) {                                                                                    \
        const T sb = hsum_##SUF(LB[i]), sc = hsum_##SUF(LC[i]);                                                              \
        if (assign) { dBp[bi * t * n + i] = sb; dCp[bi * t * n + i] = sc; }                                                  \
        else { dBp[bi * t * n + i] += sb; dCp[bi * t * n + i] += sc; }                                                       \
    }                                                                                                                        \
}                                                                                                                            \
                                                                                                                             \
void scan_bwd_##SUF(const T *x, const T *dt, const T *dtb, int softplus, const T *At, const T *Bm, const T *Cm,              \
                    int64_t bs, int64_t cs, const T *Dv, const T *z, int64_t zs, const T *dy, T *dx, T *ddt, T *dz, int64_t dzs,\
                    T *dAt_part, T *dB_out, T *dC_out, T *dD_part, T *ddtb_part, int64_t b, int64_t t, int64_t d,            \
                    int64_t n, int nthreads) {                                                                               \
    /* dAt_part, dD_part and ddtb_part (when dtb is given) have a leading [nthreads] axis and must be                        \
       zeroed by the caller. With b >= nthreads every thread owns whole batch rows and writes dB_out,                        \
       dC_out ([b, t, n]) directly; otherwise they are zeroed per-thread partials [nthreads, b, t, n]                        \
       summed by the caller. Either way dB and dC are first summed lane-wise per row (LB, LC) and                            \
       reduced once. ddt is the gradient with respect to the dt input (before bias and softplus). */                         \
    const int64_t nblk = d / BLK;                                                                                            \
    const int rows_mode = b >= nthreads;                                                                                     \
    _Pragma("omp parallel num_threads(nthreads)")                                                                            \
    {                                                                                                                        \
        const int tid = thread_id();                                                                                         \
        bwd_scratch_##SUF s;                                                                                                 \
        s.H = (V *)aligned_alloc(64, sizeof(V) * (size_t)(t * n));                                                           \
        s.Ad = (V *)aligned_alloc(64, sizeof(V) * (size_t)(t * n));                                                          \
        s.LB = (V *)aligned_alloc(64, sizeof(V) * (size_t)(t * n));                                                          \
        s.LC = (V *)aligned_alloc(64, sizeof(V) * (size_t)(t * n));                                                          \
        s.DV = (V *)aligned_alloc(64, sizeof(V) * (size_t)t);                                                                \
        s.SL = (V *)aligned_alloc(64, sizeof(V) * (size_t)t);                                                                \
        s.G1 = (V *)aligned_alloc(64, sizeof(V) * (size_t)t);                                                                \
        s.G2 = (V *)aligned_alloc(64, sizeof(V) * (size_t)t);                                                                \
        s.g = (V *)aligned_alloc(64, sizeof(V) * (size_t)n);                                                                 \
        s.dAacc = (V *)aligned_alloc(64, sizeof(V) * (size_t)n);                                                             \
        s.A = (V *)aligned_alloc(64, sizeof(V) * (size_t)n);                                                                 \
        s.A2 = (V *)aligned_alloc(64, sizeof(V) * (size_t)n);                                                                \
        T *dAp = dAt_part + (int64_t)tid * n * d;                                                                            \
        T *dDp = dD_part + (int64_t)tid * d;                                                                                 \
        T *ddtbp = dtb ? ddtb_part + (int64_t)tid * d : NULL;                                                                \
        if (rows_mode) {                                                                                                     \
            _Pragma("omp for schedule(dynamic, 1)")                                                                          \
            for (int64_t bi = 0; bi < b; bi++) {                                                                             \
                memset(s.LB, 0, sizeof(V) * (size_t)(t * n));                                                                \
                memset(s.LC, 0, sizeof(V) * (size_t)(t * n));                                                                \
                for (int64_t blk = 0; blk < nblk; blk++) {                                                                   \
                    const int64_t d0 = blk * BLK;                                                                            \
                    for (int64_t j = 0; j < n; j++) { s.A[j] = load_##SUF(At + j * d + d0); s.A2[j] = s.A[j] * (T)DECAY_SCALE; }                                    \
                    bwd_job_##SUF(x, dt, dtb, softplus, Bm, Cm, bs, cs, Dv, z, zs, dy, dx, ddt, dz, dzs, dAp, dDp, ddtbp,         \
                                  bi, d0, t, d, n, &s);                                                                      \
                }                                                                                                            \
                flush_lanes_##SUF(s.LB, s.LC, dB_out, dC_out, bi, t, n, 1);                                                  \
            }                                                                                                                \
        } else {                                                                                                             \
            int64_t loaded = -1, row_b = -1;                                                                                 \
            T *dBp = dB_out + (int64_t)tid * b * t * n;                                                                      \
            T *dCp = dC_out + (int64_t)tid * b * t * n;                                                                      \
            _Pragma("omp for schedule(static)")                                                                              \
            for (int64_t job = 0; job < b * nblk; job++) {                                                                   \
                const int64_t bi = job / nblk, d0 = (job % nblk) * BLK;                                                      \
                if (loaded != d0) {                                                                                          \
                    for (int64_t j = 0; j < n; j++) { s.A[j] = load_##SUF(At + j * d + d0); s.A2[j] = s.A[j] * (T)DECAY_SCALE; }                                    \
                    loaded = d0;                                                                                             \
                }                                                                                                            \
                if (bi != row_b) {                                                                                           \
                    if (row_b >= 0) flush_lanes_##SUF(s.LB, s.LC, dBp, dCp, row_b, t, n, 0);                                 \
                    memset(s.LB, 0, sizeof(V) * (size_t)(t * n));                                                            \
                    memset(s.LC, 0, sizeof(V) * (size_t)(t * n));                                                            \
                    row_b = bi;                                                                                              \
                }                                                                                                            \
                bwd_job_##SUF(x, dt, dtb, softplus, Bm, Cm, bs, cs, Dv, z, zs, dy, dx, ddt, dz, dzs, dAp, dDp, ddtbp,             \
                              bi, d0, t, d, n, &s);                                                                          \
            }                                                                                                                \
            if (row_b >= 0) flush_lanes_##SUF(s.LB, s.LC, dBp, dCp, row_b, t, n, 0);                                         \
        }                                                                                                                    \
        free(s.H); free(s.Ad); free(s.LB); free(s.LC); free(s.DV); free(s.SL); free(s.G1); free(s.G2); free(s.g); free(s.dAacc); free(s.A); free(s.A2);          \
    }                                                                                                                        \
}

DEFINE_SCAN(float, vf, f32, exp_vf, softplus_vf, exp2_vf, 1.44269504088896341)
DEFINE_SCAN(double, vd, f64, exp_vd, softplus_vd, exp_vd, 1.0)

int scan_block_size(void) { return BLK; }

/*
 * Causal depthwise convolution fused with SiLU (Mamba's conv1d + activation), [b, t, d] layout.
 *
 *   pre[b, t, c] = bias[c] + sum_i Wt[i, c] * x[b, t - (k - 1) + i, c]     (x rows may be strided: xs)
 *   out[b, t, c] = pre * sigmoid(pre)
 *
 * Wt is the conv weight transposed to [k, d]; the backward's dx rows may be strided (dxs, e.g. the
 * x half of in_proj's gradient). d must be a multiple of BLK. The
 * backward recomputes pre, forms dpre = dout * silu'(pre) into a per-thread
 * buffer [t, d], accumulates dW/dbias into per-thread partials [nthreads, k, d]
 * and [nthreads, d], then gathers dx[t] = sum_i Wt[i] * dpre[t + (k - 1) - i].
 */
#define DEFINE_CONV(T, V, SUF, EXPV)                                                                   \
static inline V conv_pre_##SUF(const T *xb, int64_t xs, const T *Wt, const T *bias, int64_t ti,        \
                               int64_t c, int64_t d, int64_t k) {                                     \
    V acc = {0};                                                                                       \
    if (bias) acc = load_##SUF(bias + c);                                                              \
    for (int64_t i = 0; i < k; i++) {                                                                  \
        const int64_t src = ti - (k - 1) + i;                                                          \
        if (src >= 0) acc += load_##SUF(Wt + i * d + c) * load_##SUF(xb + src * xs + c);              \
    }                                                                                                  \
    return acc;                                                                                        \
}                                                                                                      \
                                                                                                       \
void conv_silu_fwd_##SUF(const T *x, int64_t xs, const T *Wt, const T *bias, T *out, int64_t b,        \
                         int64_t t, int64_t d, int64_t k, int nthreads) {                              \
    _Pragma("omp parallel for num_threads(nthreads) schedule(dynamic, 64)")                            \
    for (int64_t row = 0; row < b * t; row++) {                                                        \
        const int64_t bi = row / t, ti = row % t;                                                      \
        const T *xb = x + bi * t * xs;                                                                 \
        for (int64_t c = 0; c < d; c += BLK) {                                                         \
            const V pre = conv_pre_##SUF(xb, xs, Wt, bias, ti, c, d, k);                               \
            store_##SUF(out + row * d + c, pre / (1 + EXPV(-pre)));                                \
        }                                                                                              \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
void conv_silu_bwd_##SUF(const T *x, int64_t xs, const T *Wt, const T *bias, const T *dout, T *dx, int64_t dxs, \
                         T *dW_part, T *db_part, int64_t b, int64_t t, int64_t d, int64_t k,           \
                         int nthreads) {                                                               \
    _Pragma("omp parallel num_threads(nthreads)")                                                      \
    {                                                                                                  \
        const int tid = thread_id();                                                                   \
        T *dpre = (T *)aligned_alloc(64, sizeof(T) * (size_t)(t * d));                                 \
        T *dW = dW_part + (int64_t)tid * k * d, *db = db_part + (int64_t)tid * d;                      \
        _Pragma("omp for schedule(dynamic, 1)")                                                        \
        for (int64_t bi = 0; bi < b; bi++) {                                                           \
            const T *xb = x + bi * t * xs;                                                             \
            for (int64_t ti = 0; ti < t; ti++) {                                                       \
                for (int64_t c = 0; c < d; c += BLK) {                                                 \
                    const V pre = conv_pre_##SUF(xb, xs, Wt, bias, ti, c, d, k);                       \
                    const V s = sigmoid_##SUF(pre);                                            \
                    const V g = load_##SUF(dout + (bi * t + ti) * d + c) * (s + pre * s * (1 - s));   \
                    store_##SUF(dpre + ti * d + c, g);                                                 \
                    store_##SUF(db + c, load_##SUF(db + c) + g);                                       \
                    for (int64_t i = 0; i < k; i++) {                                                  \
                        const int64_t src = ti - (k - 1) + i;                                          \
                        if (src >= 0)                                                                  \
                            store_##SUF(dW + i * d + c,                                                \
                                        load_##SUF(dW + i * d + c) + g * load_##SUF(xb + src * xs + c)); \
                    }                                                                                  \
                }                                                                                      \
            }                                                                                          \
            for (int64_t ti = 0; ti < t; ti++) {                                                       \
                for (int64_t c = 0; c < d; c += BLK) {                                                 \
                    V acc = {0};                                                                       \
                    for (int64_t i = 0; i < k; i++) {                                                  \
                        const int64_t dst = ti + (k - 1) - i;                                          \
                        if (dst < t) acc += load_##SUF(Wt + i * d + c) * load_##SUF(dpre + dst * d + c); \
                    }                                                                                  \
                    store_##SUF(dx + (bi * t + ti) * dxs + c, acc);                                      \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        free(dpre);                                                                                    \
    }                                                                                                  \
}

DEFINE_CONV(float, vf, f32, exp_vf)
DEFINE_CONV(double, vd, f64, exp_vd)

/*
 * RMS norm over the last axis of x [rows, d] (d a multiple of BLK), as Mamba's block and final norms:
 *   rstd[r] = 1 / sqrt(mean_c x[r, c]^2 + eps),   y[r, c] = w[c] * x[r, c] * rstd[r]
 * Backward: with xh = x * rstd and g = dy * w,
 *   dx = rstd * (g - xh * mean_c(g * xh)),   dw += sum_r dy * xh   (per-thread partials [nthreads, d])
 */
#define DEFINE_RMS(T, V, SUF)                                                                          \
void rms_fwd_##SUF(const T *x, const T *w, double eps, T *y, T *rstd, int64_t rows, int64_t d,        \
                   int nthreads) {                                                                     \
    _Pragma("omp parallel for num_threads(nthreads) schedule(dynamic, 64)")                            \
    for (int64_t r = 0; r < rows; r++) {                                                               \
        const T *xr = x + r * d;                                                                       \
        V acc = {0};                                                                                   \
        for (int64_t c = 0; c < d; c += BLK) { const V v = load_##SUF(xr + c); acc += v * v; }         \
        const T s = (T)(1.0 / sqrt((double)hsum_##SUF(acc) / (double)d + eps));                        \
        rstd[r] = s;                                                                                   \
        for (int64_t c = 0; c < d; c += BLK)                                                           \
            store_##SUF(y + r * d + c, load_##SUF(w + c) * (load_##SUF(xr + c) * s));                  \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
void rms_bwd_##SUF(const T *x, const T *w, const T *rstd, const T *dy, T *dx, T *dw_part, int64_t rows, \
                   int64_t d, int nthreads) {                                                          \
    _Pragma("omp parallel num_threads(nthreads)")                                                      \
    {                                                                                                  \
        T *dw = dw_part + (int64_t)thread_id() * d;                                                    \
        _Pragma("omp for schedule(dynamic, 64)")                                                       \
        for (int64_t r = 0; r < rows; r++) {                                                           \
            const T *xr = x + r * d, *dyr = dy + r * d;                                                \
            const T s = rstd[r];                                                                       \
            V acc = {0};                                                                               \
            for (int64_t c = 0; c < d; c += BLK) {                                                     \
                const V xh = load_##SUF(xr + c) * s, dyv = load_##SUF(dyr + c);                        \
                acc += dyv * load_##SUF(w + c) * xh;                                                   \
                store_##SUF(dw + c, load_##SUF(dw + c) + dyv * xh);                                    \
            }                                                                                          \
            const T m = hsum_##SUF(acc) / (T)d;                                                        \
            for (int64_t c = 0; c < d; c += BLK) {                                                     \
                const V xh = load_##SUF(xr + c) * s;                                                   \
                store_##SUF(dx + r * d + c, (load_##SUF(dyr + c) * load_##SUF(w + c) - xh * m) * s);  \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
}

DEFINE_RMS(float, vf, f32)
DEFINE_RMS(double, vd, f64)
