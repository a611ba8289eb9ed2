/* ConvMixer CPU kernels: channels-last (NHWC) depthwise convolution and fused activation + BatchNorm passes.
 *
 * Every activation tensor is NHWC-contiguous, fp32 (bf == 0) or bfloat16 (bf == 1); parameters, per-channel
 * coefficients and statistics are fp32 (statistics: double). Work is vectorized over channels in blocks of VL
 * lanes with GCC vector extensions (16 lanes and a few AVX-512 instructions where the compiler targets AVX-512,
 * 8 lanes elsewhere) and split over threads with OpenMP.
 * The depthwise kernels are compiled once per kernel size KS so that their loops unroll completely.
 *
 * Built by convmixer/fast/build.py (which hashes this file into the name of the cached library) as
 *   cc -O3 -std=gnu11 -fPIC -shared -fno-math-errno -Wno-psabi [-march=native] [-fopenmp] [-DKS=k] kernels.c -lm
 * Without -DKS only the elementwise kernels are built; without -fopenmp everything runs on one thread.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define OMP(directive) _Pragma(#directive)
#else
#define OMP(directive) /* no OpenMP: the loops run on the calling thread */
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define CMX_AVX512 1 /* GCC splits 16-lane bf16 <-> fp32 vector conversions; use the instructions directly */
#define VL 16        /* channels per vector: one zmm register */
#else
#define VL 8 /* two SSE or one AVX register */
#endif
#define AI static inline __attribute__((always_inline))
typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4)));
typedef uint32_t vu __attribute__((vector_size(VL * 4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));
typedef uint16_t vhu __attribute__((vector_size(VL * 2), aligned(2)));

enum { ACT_NONE = 0, ACT_GELU = 1, ACT_RELU = 2, ACT_SILU = 3 };

/* fp32 lanes per vector this build uses (16 with AVX-512, else 8): benchmarks record it */
int cmx_lanes(void) { return VL; }

/* ---------------------------------------------------------------------------------------------------------
 * loads and stores: fp32 or bf16 memory, fp32 registers; nc < VL touches only the first nc lanes
 * ------------------------------------------------------------------------------------------------------- */
AI vf ld(const void* p, long off, int bf) {
  if (!bf) return *(const vfu*)((const float*)p + off);
#ifdef CMX_AVX512
  __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)((const uint16_t*)p + off)));
  return (vf)_mm512_slli_epi32(u, 16);
#else
  vhu h = *(const vhu*)((const uint16_t*)p + off);
  return (vf)(__builtin_convertvector(h, vu) << 16);
#endif
}
AI float lds(const void* p, long off, int bf) {
  if (!bf) return ((const float*)p)[off];
  uint32_t u = (uint32_t)((const uint16_t*)p)[off] << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
AI vf ldn(const void* p, long off, long nc, int bf) {
  if (nc == VL) return ld(p, off, bf);
  vf v = {0};
  for (long l = 0; l < nc; l++) v[l] = lds(p, off + l, bf);
  return v;
}
AI void st(void* p, long off, vf v, int bf) {
  if (!bf) { *(vfu*)((float*)p + off) = v; return; }
#if defined(CMX_AVX512) && defined(__AVX512BF16__)
  /* one instruction, round to nearest even (subnormal results flush to zero) */
  _mm256_storeu_si256((__m256i*)((uint16_t*)p + off), (__m256i)_mm512_cvtneps_pbh((__m512)v));
  return;
#endif
  vu u = (vu)v;
  vu r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  /* round to nearest even */
  vi nan = v != v;
  r = (vu)(((vi)r & ~nan) | (nan & 0x7fc0));
#ifdef CMX_AVX512
  _mm256_storeu_si256((__m256i*)((uint16_t*)p + off), _mm512_cvtepi32_epi16((__m512i)r));
#else
  *(vhu*)((uint16_t*)p + off) = __builtin_convertvector(r, vhu);
#endif
}
AI void sts(void* p, long off, float f, int bf) {
  if (!bf) { ((float*)p)[off] = f; return; }
  uint32_t u;
  memcpy(&u, &f, 4);
  ((uint16_t*)p)[off] = (f != f) ? 0x7fc0 : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
AI void stn(void* p, long off, vf v, long nc, int bf) {
  if (nc == VL) { st(p, off, v, bf); return; }
  for (long l = 0; l < nc; l++) sts(p, off + l, v[l], bf);
}
AI vf ldw(const float* p, long nc) { /* fp32 per-channel vector, zero beyond nc */
  vf v = {0};
  if (!p) return v;
  if (nc == VL) return *(const vfu*)p;
  for (long l = 0; l < nc; l++) v[l] = p[l];
  return v;
}

/* ---------------------------------------------------------------------------------------------------------
 * math: exp, and the activations with their derivatives
 * ------------------------------------------------------------------------------------------------------- */
AI vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
AI vf vbr(float f) { return (vf){0} + f; }

AI vf vexp(vf x) {
  x = vsel(x > 88.3762626647949f, vbr(88.3762626647949f), x);
  x = vsel(x < -87.3365478515625f, vbr(-87.3365478515625f), x);
  vf n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f; /* round(x / ln 2) */
  vf r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vf p = vbr(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)e;
}

AI vf vrcp(vf x) { /* 1 / x to about 1 ulp */
#ifdef CMX_AVX512
  vf r = (vf)_mm512_rcp14_ps((__m512)x);
  return r * (2.f - x * r);
#else
  return 1.f / x;
#endif
}

/* erf(t) for the forward GELU: t * P(t^2) / Q(t^2) on |t| <= 3.9 (beyond it erf is +-1 to fp32 precision), a
 * (5, 5) rational least-squares fit made for this project; max error 6e-8 in exact arithmetic, 3.5e-7 evaluated in
 * fp32. About half the work of the exp-based form below, which the backward keeps because it needs exp anyway. */
AI vf erf_rational(vf t) {
  t = vsel(t > 3.9f, vbr(3.9f), t);
  t = vsel(t < -3.9f, vbr(-3.9f), t);
  vf s = t * t;
  vf p = vbr(2.1958344404993113e-06f);
  p = p * s + 2.8594263130798936e-04f;
  p = p * s + 3.502253210172057e-03f;
  p = p * s + 5.195695161819458e-02f;
  p = p * s + 1.833309829235077e-01f;
  p = p * s + 1.1283791065216064f;
  vf q = vbr(3.9657505112700164e-05f);
  q = q * s + 1.1117426911368966e-03f;
  q = q * s + 1.4435256831347942e-02f;
  q = q * s + 1.1131563037633896e-01f;
  q = q * s + 4.9580588936805725e-01f;
  q = q * s + 1.f;
  return t * p * vrcp(q);
}

/* y = act(z); *dy = act'(z) when dy != NULL. GELU is the exact (erf) form: with dy, erf by a 1.5e-7 rational fit
 * in exp(-t^2) (the approximation PyTorch's vectorized kernels use), whose exp also gives the density. */
AI vf act_fn(vf z, int act, vf* dy) {
  if (act == ACT_GELU && !dy) return z * (0.5f + 0.5f * erf_rational(z * 0.70710678118654752f));
  if (act == ACT_GELU) {
    vf a = z * 0.70710678118654752f;
    vi neg = a < 0.f;
    vf ax = vsel(neg, -a, a);
    vf t = vrcp(1.f + 0.3275911f * ax);
    vf e = vexp(-a * a);
    vf q = vbr(1.061405429f);
    q = q * t - 1.453152027f;
    q = q * t + 1.421413741f;
    q = q * t - 0.284496736f;
    q = q * t + 0.254829592f;
    vf erf_abs = 1.f - q * t * e;
    vf cdf = 0.5f + 0.5f * vsel(neg, -erf_abs, erf_abs);
    if (dy) *dy = cdf + z * e * 0.39894228040143268f;
    return z * cdf;
  }
  if (act == ACT_RELU) {
    vi pos = z > 0.f;
    if (dy) *dy = vsel(pos, vbr(1.f), vbr(0.f));
    return vsel(pos, z, vbr(0.f));
  }
  if (act == ACT_SILU) {
    vf s = vrcp(1.f + vexp(-z));
    if (dy) *dy = s * (1.f + z * (1.f - s));
    return z * s;
  }
  if (dy) *dy = vbr(1.f);
  return z;
}

static int nthreads_for(int requested, long items) {
  if (requested < 1) requested = 1;
  return items < requested ? (int)(items > 0 ? items : 1) : requested;
}

/* The machine's FMA peak as a yardstick for the kernels (benchmarks/bench_kernels.py): every thread runs `iters`
 * rounds of 12 independent vector FMAs on registers (enough chains to cover the FMA latency of 2 pipes). Returns the
 * flops done (2 per lane per FMA); the caller times the call. */
double cmx_fma_peak(long iters, int nthreads) {
  double total = 0;
  (void)nthreads;
OMP(omp parallel num_threads(nthreads_for(nthreads, nthreads)) reduction(+ : total))
  {
    vf a[12];
    for (int i = 0; i < 12; i++) a[i] = vbr(1.f + i * 1e-3f);
    vf m = vbr(0.999999f), c = vbr(1e-7f);
    for (long it = 0; it < iters; it++) {
      for (int i = 0; i < 12; i++) a[i] = a[i] * m + c; /* not foldable: fp arithmetic is not reassociated */
    }
    float s = 0;
    for (int i = 0; i < 12; i++) s += a[i][0];
    total += 2.0 * 12 * VL * (double)iters + (s == 1234.5f); /* uses s: the loop cannot be dropped */
  }
  return total;
}

/* ---------------------------------------------------------------------------------------------------------
 * elementwise passes over an (M, C) matrix (M = B*H*W pixels), rows split over threads
 * ------------------------------------------------------------------------------------------------------- */

/* Row-major passes. Rows go out in chunks of CHUNK rows, statically: each thread takes one contiguous run of
 * chunks, i.e. the same share of the batch in every pass and in the depthwise kernels below (image-major), so what a
 * pass writes is still in that core's own cache when the next pass reads it. Handing out single chunks dynamically
 * (before 2026-12-05) made the whole training step 1.09x (bf16) to 1.28x (AVX2 fp32) slower on 2 cores, and was
 * still 1.14x slower with a busy process on one of them (docs/RESULTS.md, "seventh session"). Within a chunk every
 * row's channels are walked in memory order. Per-channel sums are kept per chunk (fp32 over CHUNK rows) and added up
 * in chunk order in double precision afterwards, so the result does not depend on which thread took which chunk.
 * The row loops are instantiated for every (activation, dtype, variant) so that nothing is tested per element;
 * whole VL-channel blocks run a branch-free loop, a final partial block (C % VL) the masked one. */
#define CHUNK 64
#define DISPATCH_ACT_BF(call, V)                                                 \
  switch (act * 2 + bf) {                                                        \
    case 0: call(ACT_NONE, 0, V); break; case 1: call(ACT_NONE, 1, V); break; \
    case 2: call(ACT_GELU, 0, V); break; case 3: call(ACT_GELU, 1, V); break; \
    case 4: call(ACT_RELU, 0, V); break; case 5: call(ACT_RELU, 1, V); break; \
    default: if (bf) call(ACT_SILU, 1, V); else call(ACT_SILU, 0, V);          \
  }
#define FOR_ROW_CHUNKS(nchunks)                 \
  OMP(omp for schedule(static))                 \
  for (long chunk = 0; chunk < (nchunks); chunk++)
#define CHUNK_ROWS(M) long r0 = chunk * CHUNK, r1 = r0 + CHUNK < (M) ? r0 + CHUNK : (M);

/* acc (2 * ncb vectors: sums then sums of the second quantity) -> slot[0:C], slot[C:2C]; acc is zeroed */
static void store_sums(vf* acc, long ncb, long C, float* slot) {
  for (long c = 0; c < C; c++) { slot[c] = acc[c / VL][c % VL]; slot[C + c] = acc[ncb + c / VL][c % VL]; }
  memset(acc, 0, sizeof(vf) * 2 * ncb);
}

/* out[j] = sum over chunks, in order, of part[chunk][j] */
static void sum_chunks(const float* part, long nchunks, long n, double* out) {
  for (long j = 0; j < n; j++) out[j] = 0;
  for (long k = 0; k < nchunks; k++)
    for (long j = 0; j < n; j++) out[j] += part[k * n + j];
}

enum { EW_STATS = 0, EW_AFFINE = 1, EW_AFFINE_ADD = 2, EW_ACT = 3 };

/* one channel block of one row: v = act(in) -> stats | v * scale + shift (+ addend) -> out */
AI void affine_block(const void* in, int act, const float* scale, const float* shift, const void* addend, void* out,
                     vf* acc, long ncb, int bf, int variant, long off, long c0, long cb, long nc) {
  vf v = act_fn(ldn(in, off, nc, bf), act, NULL);
  if (variant == EW_STATS) {
    acc[cb] += v;
    acc[ncb + cb] += v * v;
  } else if (variant != EW_ACT) {
    v = v * ldw(scale + c0, nc) + ldw(shift + c0, nc);
    if (variant == EW_AFFINE_ADD) v += ldn(addend, off, nc, bf);
  }
  stn(out, off, v, nc, bf);
}

AI void affine_rows(const void* in, int act, const float* scale, const float* shift, const void* addend, void* out,
                    vf* acc, int bf, int variant, long r0, long r1, long C) {
  long nfull = C / VL, ncb = (C + VL - 1) / VL;
  for (long r = r0; r < r1; r++) {
    for (long cb = 0; cb < nfull; cb++)
      affine_block(in, act, scale, shift, addend, out, acc, ncb, bf, variant, r * C + cb * VL, cb * VL, cb, VL);
    if (nfull < ncb)
      affine_block(in, act, scale, shift, addend, out, acc, ncb, bf, variant, r * C + nfull * VL, nfull * VL, nfull,
                   C - nfull * VL);
  }
}

/* v = act(in); then stats = [sum v, sum v^2] per channel and out = v (stats != NULL), or
 * out = v * scale + shift (+ addend) (scale != NULL), or out = v. out may alias in or addend. */
void cmx_act_affine(const void* in, int act, const float* scale, const float* shift, const void* addend, void* out,
                    double* stats, int bf, long M, long C, int nthreads) {
  long nchunks = (M + CHUNK - 1) / CHUNK, ncb = (C + VL - 1) / VL;
  int nt = nthreads_for(nthreads, nchunks);
  (void)nt; /* unused without OpenMP */
  int variant = stats ? EW_STATS : !scale ? EW_ACT : addend ? EW_AFFINE_ADD : EW_AFFINE;
  float* part = stats ? malloc(sizeof(float) * nchunks * 2 * C) : NULL;
OMP(omp parallel num_threads(nt))
  {
    vf* acc = part ? aligned_alloc(64, sizeof(vf) * 2 * ncb) : NULL;
    if (acc) memset(acc, 0, sizeof(vf) * 2 * ncb);
    FOR_ROW_CHUNKS(nchunks) {
      CHUNK_ROWS(M)
#define CALL(A, B, V) affine_rows(in, A, scale, shift, addend, out, acc, B, V, r0, r1, C)
      if (variant == EW_STATS) { DISPATCH_ACT_BF(CALL, EW_STATS) }
      else if (variant == EW_AFFINE) { DISPATCH_ACT_BF(CALL, EW_AFFINE) }
      else if (variant == EW_AFFINE_ADD) { DISPATCH_ACT_BF(CALL, EW_AFFINE_ADD) }
      else { DISPATCH_ACT_BF(CALL, EW_ACT) }
#undef CALL
      if (acc) store_sums(acc, ncb, C, part + chunk * 2 * C);
    }
    free(acc);
  }
  if (part) {
    sum_chunks(part, nchunks, 2 * C, stats);
    free(part);
  }
}

AI void reduce_block(const void* z, const void* dout, int act, vf* acc, long ncb, int bf, long off, long cb, long nc) {
  vf g = ldn(dout, off, nc, bf);
  acc[cb] += g;
  acc[ncb + cb] += g * act_fn(ldn(z, off, nc, bf), act, NULL);
}

AI void reduce_rows(const void* z, const void* dout, int act, vf* acc, int bf, long r0, long r1, long C) {
  long nfull = C / VL, ncb = (C + VL - 1) / VL;
  for (long r = r0; r < r1; r++) {
    for (long cb = 0; cb < nfull; cb++) reduce_block(z, dout, act, acc, ncb, bf, r * C + cb * VL, cb, VL);
    if (nfull < ncb) reduce_block(z, dout, act, acc, ncb, bf, r * C + nfull * VL, nfull, C - nfull * VL);
  }
}

/* Backward of out = BN(act(z)) (+ residual): pass 1 sums[0:C] = sum dout, sums[C:2C] = sum dout * act(z). */
void cmx_act_bn_bwd_reduce(const void* z, const void* dout, int act, double* sums, int bf, long M, long C,
                           int nthreads) {
  long nchunks = (M + CHUNK - 1) / CHUNK, ncb = (C + VL - 1) / VL;
  int nt = nthreads_for(nthreads, nchunks);
  (void)nt; /* unused without OpenMP */
  float* part = malloc(sizeof(float) * nchunks * 2 * C);
OMP(omp parallel num_threads(nt))
  {
    vf* acc = aligned_alloc(64, sizeof(vf) * 2 * ncb);
    memset(acc, 0, sizeof(vf) * 2 * ncb);
    FOR_ROW_CHUNKS(nchunks) {
      CHUNK_ROWS(M)
#define CALL(A, B, V) reduce_rows(z, dout, A, acc, B, r0, r1, C)
      DISPATCH_ACT_BF(CALL, 0)
#undef CALL
      store_sums(acc, ncb, C, part + chunk * 2 * C);
    }
    free(acc);
  }
  sum_chunks(part, nchunks, 2 * C, sums);
  free(part);
}

AI void apply_block(const void* z, const void* dout, int act, const float* ca, const float* cb_, const float* cc,
                    void* dz, int bf, long off, long c0, long nc) {
  vf d;
  vf y = act_fn(ldn(z, off, nc, bf), act, &d);
  vf g = ldn(dout, off, nc, bf);
  stn(dz, off, (ldw(ca + c0, nc) * g + ldw(cb_ + c0, nc) * y + ldw(cc + c0, nc)) * d, nc, bf);
}

AI void apply_rows(const void* z, const void* dout, int act, const float* ca, const float* cb_, const float* cc,
                   void* dz, int bf, long r0, long r1, long C) {
  long nfull = C / VL;
  for (long r = r0; r < r1; r++) {
    for (long cb = 0; cb < nfull; cb++) apply_block(z, dout, act, ca, cb_, cc, dz, bf, r * C + cb * VL, cb * VL, VL);
    if (nfull * VL < C) apply_block(z, dout, act, ca, cb_, cc, dz, bf, r * C + nfull * VL, nfull * VL, C - nfull * VL);
  }
}

/* pass 2: dz = (ca * dout + cb * act(z) + cc) * act'(z), per-channel coefficients ca, cb, cc */
void cmx_act_bn_bwd_apply(const void* z, const void* dout, int act, const float* ca, const float* cb_, const float* cc,
                          void* dz, int bf, long M, long C, int nthreads) {
  long nchunks = (M + CHUNK - 1) / CHUNK;
  int nt = nthreads_for(nthreads, nchunks);
  (void)nt; /* unused without OpenMP */
OMP(omp parallel num_threads(nt))
  FOR_ROW_CHUNKS(nchunks) {
    CHUNK_ROWS(M)
#define CALL(A, B, V) apply_rows(z, dout, A, ca, cb_, cc, dz, B, r0, r1, C)
    DISPATCH_ACT_BF(CALL, 0)
#undef CALL
  }
}

/* ---------------------------------------------------------------------------------------------------------
 * per-channel BatchNorm coefficients, a few hundred numbers: in C because as PyTorch operators on (C,) tensors they
 * were a dozen dispatches (about 5 us each) per BatchNorm and step. Double precision in the order of the formulas
 * below, each product and sum rounded on its own (no fused multiply-add), so the results are those of the same
 * formulas as float64 PyTorch operators to the bit (tests/fast/test_ops.py).
 * ------------------------------------------------------------------------------------------------------- */
#define NO_FMA __attribute__((optimize("fp-contract=off")))

/* Forward, from stats = [sum act(z), sum act(z)^2] over M rows: mean, biased variance (clamped at 0), and the affine
 * form of training-mode BN, out = act(z) * scale + shift with scale = weight / sqrt(var + eps). */
NO_FMA void cmx_bn_coeffs(const double* stats, const float* weight, const float* bias, double eps, long M, long C,
                          float* scale, float* shift, float* mean_out, float* var_out) {
  for (long c = 0; c < C; c++) {
    double mean = stats[c] / (double)M;
    double var = stats[C + c] / (double)M - mean * mean;
    var = var < 0.0 ? 0.0 : var;
    double sc = (double)weight[c] * (1.0 / sqrt(var + eps));
    scale[c] = (float)sc;
    shift[c] = (float)((double)bias[c] - mean * sc);
    mean_out[c] = (float)mean;
    var_out[c] = (float)var;
  }
}

/* Backward, from sums = [sum dout, sum dout * act(z)] and the forward's (fp32) mean and variance: the coefficients of
 * dz = (ca * dout + cb * act(z) + cc) * act'(z) (cmx_act_bn_bwd_apply), and the weight and bias gradients.
 * With y_hat = (act(z) - mean) * invstd:  d act(z) = k * (dout - mean(dout) - y_hat * mean(dout * y_hat)),
 * k = weight * invstd;  d weight = sum dout * y_hat;  d bias = sum dout. */
NO_FMA void cmx_bn_bwd_coeffs(const double* sums, const float* weight, const float* mean_in, const float* var_in,
                              double eps, long M, long C, float* ca, float* cb, float* cc, float* d_weight,
                              float* d_bias) {
  for (long c = 0; c < C; c++) {
    double sum_g = sums[c], sum_gy = sums[C + c], mean = (double)mean_in[c];
    double invstd = 1.0 / sqrt((double)var_in[c] + eps);
    double dw = invstd * (sum_gy - mean * sum_g);
    double k = (double)weight[c] * invstd;
    double m2 = dw / (double)M;
    ca[c] = (float)k;
    cb[c] = (float)(-k * invstd * m2);
    cc[c] = (float)(-k * sum_g / (double)M + k * invstd * mean * m2);
    d_weight[c] = (float)dw;
    d_bias[c] = (float)sum_g;
  }
}

#ifdef KS
/* ---------------------------------------------------------------------------------------------------------
 * depthwise KS x KS convolution, stride 1, zero padding (pt top, pl left; output size = input size)
 * ------------------------------------------------------------------------------------------------------- */
#define KK (KS * KS)
#define RX 8 /* output pixels per register block (forward) */
#define RW 4 /* pixels per register block (weight gradient) */

/* one image's channels [c0, c0+VL) -> the interior of an fp32 tile with a zero border of pt rows on top and pl
 * columns on the left (and whatever the tile has beyond). zero_border: also write the border (the weight-gradient
 * kernel reuses tiles of other shapes); the forward kernel zeroes its tile once and never writes the border. */
static void load_tile(const void* src, int bf, long H, long W, long C, long c0, long pt, long pl, long Hp, long Wp,
                      vf* t, int zero_border) {
  long nc = C - c0 < VL ? C - c0 : VL;
  if (zero_border) memset(t, 0, sizeof(vf) * Hp * Wp);
  for (long y = 0; y < H; y++) {
    vf* row = t + (y + pt) * Wp + pl;
    const long base = y * W * C + c0;
    if (nc == VL)
      for (long x = 0; x < W; x++) row[x] = ld(src, base + x * C, bf);
    else
      for (long x = 0; x < W; x++) row[x] = ldn(src, base + x * C, nc, bf);
  }
}

enum { EP_PLAIN = 0, EP_AFFINE = 1, EP_AFFINE_RES = 2 };

/* one output row: v = z (EP_PLAIN) or act(z) * scale + shift (+ the input pixel itself, EP_AFFINE_RES) */
AI void epilogue_row(const vf* z, const vf* res, void* out, long off, long C, long W, long nc, vf sc, vf sh, int act,
                     int variant, int bf) {
  for (long x = 0; x < W; x++) {
    vf v = z[x];
    if (variant != EP_PLAIN) {
      v = act_fn(v, act, NULL) * sc + sh;
      if (variant == EP_AFFINE_RES) v += res[x];
    }
    if (nc == VL) st(out, off + x * C, v, bf);
    else stn(out, off + x * C, v, nc, bf);
  }
}

/* out = dwconv(x, w) + bias (flip: the kernel rotated by 180 degrees, which gives the input gradient);
 * with scale: out = act(dwconv(x, w) + bias) * scale + shift (+ x when residual). w is (C, KS*KS) fp32. */
void cmx_dw_fwd(const void* x, const float* w, const float* bias, int flip, int act, const float* scale,
                const float* shift, int residual, void* out, int bf, long B, long H, long W, long C, long pt, long pl,
                int nthreads) {
  /* tile rows are padded to a whole number of RX-pixel blocks, so every block runs the unrolled loop */
  long ncb = (C + VL - 1) / VL, Hp = H + KS - 1, Wr = (W + RX - 1) / RX * RX, Wp = Wr + KS - 1, es = bf ? 2 : 4;
  int nt = nthreads_for(nthreads, ncb * B);
  (void)nt;
  int variant = !scale ? EP_PLAIN : residual ? EP_AFFINE_RES : EP_AFFINE;
  /* the filters as [channel block][tap] vectors (rotated for the input gradient), made once per call */
  vf* wall = aligned_alloc(64, sizeof(vf) * ncb * KK);
  for (long cb = 0; cb < ncb; cb++)
    for (int t = 0; t < KK; t++)
      for (int l = 0; l < VL; l++) {
        long c = cb * VL + l;
        wall[cb * KK + t][l] = c < C ? w[c * KK + (flip ? KK - 1 - t : t)] : 0.f;
      }
OMP(omp parallel num_threads(nt))
  {
    vf* tile = aligned_alloc(64, sizeof(vf) * Hp * Wp);
    vf* zrow = aligned_alloc(64, sizeof(vf) * Wr);
    memset(tile, 0, sizeof(vf) * Hp * Wp);
    /* image-major order, split statically: each thread convolves its own contiguous share of the images, the same
     * share the row passes give it (see CHUNK), and walks each image's channel blocks, i.e. whole cache lines */
OMP(omp for schedule(static))
    for (long it = 0; it < ncb * B; it++) {
      long b = it / ncb, cb = it % ncb, c0 = cb * VL, nc = C - c0 < VL ? C - c0 : VL;
      const vf* wt = wall + cb * KK;
      vf bv = ldw(bias ? bias + c0 : NULL, nc);
      vf sc = ldw(scale ? scale + c0 : NULL, nc), sh = ldw(shift ? shift + c0 : NULL, nc);
      long img = b * H * W * C;
      load_tile((const char*)x + es * img, bf, H, W, C, c0, pt, pl, Hp, Wp, tile, 0);
      for (long y = 0; y < H; y++) {
        for (long x0 = 0; x0 < W; x0 += RX) {
          vf acc[RX];
          for (int r = 0; r < RX; r++) acc[r] = bv;
          for (int i = 0; i < KS; i++) {
            const vf* row = tile + (y + i) * Wp + x0;
            for (int j = 0; j < KS; j++) {
              vf wv = wt[i * KS + j];
              for (int r = 0; r < RX; r++) acc[r] += row[r + j] * wv;
            }
          }
          for (int r = 0; r < RX; r++) zrow[x0 + r] = acc[r];
        }
        const vf* res = tile + (y + pt) * Wp + pl;
        long off = img + y * W * C + c0;
#define CALL(A, B_, V) epilogue_row(zrow, res, out, off, C, W, nc, sc, sh, A, V, B_)
        if (variant == EP_PLAIN) { if (bf) CALL(ACT_NONE, 1, EP_PLAIN); else CALL(ACT_NONE, 0, EP_PLAIN); }
        else if (variant == EP_AFFINE) { DISPATCH_ACT_BF(CALL, EP_AFFINE) }
        else { DISPATCH_ACT_BF(CALL, EP_AFFINE_RES) }
#undef CALL
      }
    }
    free(tile);
    free(zrow);
  }
  free(wall);
}

/* gw[c, i*KS + j] = sum_{b,y,x} x_pad[b, y+i, x+j, c] * g[b, y, x, c];  gb[c] = sum g (gb may be NULL).
 * Work items are (group of WB images, group of WG channel blocks): an item walks its images and, per image, its
 * neighbouring channel blocks (whole cache lines), accumulating in registers per image and in doubles per item.
 * Items of one image group write their own slice of that group's partial sums, which are added up in image-group
 * order at the end: the result does not depend on the thread count or scheduling. */
#define WB 8
#define WG 4
void cmx_dw_wgrad(const void* x, const void* g, float* gw, float* gb, int bf, long B, long H, long W, long C, long pt,
                  long pl, int nthreads) {
  long ncb = (C + VL - 1) / VL, Hp = H + KS - 1, Wp = W + KS - 1, es = bf ? 2 : 4;
  long nbg = (B + WB - 1) / WB, ncg = (ncb + WG - 1) / WG, slot = (KK + 1) * VL; /* per channel block */
  double* part = calloc((size_t)nbg * ncb * slot, sizeof(double));
  int nt = nthreads_for(nthreads, nbg * ncg);
  (void)nt;
OMP(omp parallel num_threads(nt))
  {
    vf* tile = aligned_alloc(64, sizeof(vf) * Hp * Wp);
    vf* gt = aligned_alloc(64, sizeof(vf) * H * W);
    memset(tile, 0, sizeof(vf) * Hp * Wp);
OMP(omp for schedule(static)) /* image-group-major: each thread its own share of the batch, as above */
    for (long it = 0; it < nbg * ncg; it++) {
      long bg = it / ncg, cg = it % ncg;
      for (long b = bg * WB; b < B && b < (bg + 1) * WB; b++) {
        long img = es * b * H * W * C;
        for (long cb = cg * WG; cb < ncb && cb < (cg + 1) * WG; cb++) {
          long c0 = cb * VL;
          double* acc_d = part + (bg * ncb + cb) * slot;
          load_tile((const char*)x + img, bf, H, W, C, c0, pt, pl, Hp, Wp, tile, 0);
          load_tile((const char*)g + img, bf, H, W, C, c0, 0, 0, H, W, gt, 0);
          vf sb = {0};
          for (long p = 0; p < H * W; p++) sb += gt[p];
          for (int l = 0; l < VL; l++) acc_d[KK * VL + l] += sb[l];
          for (int i = 0; i < KS; i++) {
            vf acc[KS];
            for (int j = 0; j < KS; j++) acc[j] = (vf){0};
            for (long y = 0; y < H; y++) {
              const vf* row = tile + (y + i) * Wp;
              const vf* gr = gt + y * W;
              long x0 = 0;
              for (; x0 + RW <= W; x0 += RW) {
                vf gv[RW];
                for (int r = 0; r < RW; r++) gv[r] = gr[x0 + r];
                for (int j = 0; j < KS; j++)
                  for (int r = 0; r < RW; r++) acc[j] += row[x0 + r + j] * gv[r];
              }
              for (; x0 < W; x0++) {
                vf gv = gr[x0];
                for (int j = 0; j < KS; j++) acc[j] += row[x0 + j] * gv;
              }
            }
            for (int j = 0; j < KS; j++)
              for (int l = 0; l < VL; l++) acc_d[(i * KS + j) * VL + l] += acc[j][l];
          }
        }
      }
    }
    free(tile);
    free(gt);
  }
  for (long cb = 0; cb < ncb; cb++) {
    for (long k = 0; k < slot; k++) {
      double sum = 0;
      for (long bg = 0; bg < nbg; bg++) sum += part[(bg * ncb + cb) * slot + k];
      long t = k / VL, c = cb * VL + k % VL;
      if (c >= C) continue;
      if (t < KK) gw[c * KK + t] = (float)sum;
      else if (gb) gb[c] = (float)sum;
    }
  }
  free(part);
}
#endif
