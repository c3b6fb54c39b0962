/*
 * subtitled's native Mixture-of-Experts kernel: the ONNX Runtime custom op
 * `ai.subtitled.SparseExperts`, built at install as subtitled/translate/_sparse_experts*.so
 * and registered with a session by subtitled.translate.native.
 *
 * For each token n and each of its k selected experts e = index[n, j]:
 *     y[n] += weight[n, j] * down_e(act(gate_e(x)) * up_e(x))
 * reading only the selected experts' int8/int4 blocks, in place: no gathered copy of their
 * weights, no dequantised copy, no per-block graph nodes. The inputs are quantised to int8
 * per block of the weights' block size (as MatMulNBits does at accuracy level 4) and each
 * block's integer dot product is scaled by both scales.
 *
 * Inputs
 *   0 x          float (..., H), or (..., k, H) when each expert has its own input (Llama 4)
 *   1 index      int64 (..., k) expert of each token's slot; the leading dimensions (none
 *                to two: tokens, or batch and sequence) are the N tokens
 *   2 weight     float (..., k) weight of each slot (ignored with weighted = 0)
 *   3 gate_up    uint8 (E, 2I, H * bits / 8) rows gate 0..I-1 then up 0..I-1
 *   4 gate_up_s  float (E, 2I, H / block)
 *   5 down       uint8 (E, H, I * bits / 8)
 *   6 down_s     float (E, H, I / block)
 * Output
 *   0 y          float (..., H)
 * Attributes: bits (8 or 4), block_size (16 or 32 ... a multiple of 16), activation (0 SiLU,
 * 1 GELU with the tanh approximation), weighted (1: scale each slot by weight, 0: plain sum).
 *
 * Codes are unsigned with the implicit zero point 2^(bits-1); a value is
 * (code - zero point) * scale of its block. At 4 bits, byte j of a block holds element j in
 * its low nibble and element j + block / 2 in its high nibble.
 *
 * Work is spread over ONNX Runtime's intra-op threads (KernelContext_ParallelFor) by
 * (expert, rows) tasks: each selected expert's weight rows are read once per call, whatever
 * the number of tokens routed to it, so prefill reads each expert once, not once per token.
 *
 * ONNX Runtime's C API is used through its stable ABI only (the library does not link
 * against onnxruntime): OrtApiBase, the OrtApi function table at the positions named below,
 * and struct OrtCustomOp, as published in onnxruntime_c_api.h. The table only ever grows, so
 * asking for API version ORT_API_VERSION_USED works with every later runtime.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) || defined(__AVX512VNNI__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define SPARSE_EXPERTS_VNNI 1 /* 64 code bytes times 64 inputs per instruction */
#endif

/* ---- the slice of ONNX Runtime's C ABI this library uses ---------------------------- */

#define ORT_API_VERSION_USED 17u /* 1.17: KernelContext_ParallelFor */

typedef struct OrtStatus OrtStatus;
typedef struct OrtApi OrtApi;
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtValue OrtValue;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtShapeInferContext OrtShapeInferContext;

typedef struct OrtApiBase {
  const OrtApi *(*GetApi)(uint32_t version);
  const char *(*GetVersionString)(void);
} OrtApiBase;

enum { ORT_OK = 0, ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2 };
enum { TYPE_FLOAT = 1, TYPE_UINT8 = 2, TYPE_INT64 = 7 };
enum { INPUT_OUTPUT_REQUIRED = 0 };
enum { MEM_DEFAULT = 0 };

typedef struct OrtCustomOp {
  uint32_t version;
  void *(*CreateKernel)(const struct OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info);
  const char *(*GetName)(const struct OrtCustomOp *op);
  const char *(*GetExecutionProviderType)(const struct OrtCustomOp *op);
  int (*GetInputType)(const struct OrtCustomOp *op, size_t index);
  size_t (*GetInputTypeCount)(const struct OrtCustomOp *op);
  int (*GetOutputType)(const struct OrtCustomOp *op, size_t index);
  size_t (*GetOutputTypeCount)(const struct OrtCustomOp *op);
  void (*KernelCompute)(void *kernel, OrtKernelContext *context);
  void (*KernelDestroy)(void *kernel);
  int (*GetInputCharacteristic)(const struct OrtCustomOp *op, size_t index);
  int (*GetOutputCharacteristic)(const struct OrtCustomOp *op, size_t index);
  int (*GetInputMemoryType)(const struct OrtCustomOp *op, size_t index);
  int (*GetVariadicInputMinArity)(const struct OrtCustomOp *op);
  int (*GetVariadicInputHomogeneity)(const struct OrtCustomOp *op);
  int (*GetVariadicOutputMinArity)(const struct OrtCustomOp *op);
  int (*GetVariadicOutputHomogeneity)(const struct OrtCustomOp *op);
  OrtStatus *(*CreateKernelV2)(const struct OrtCustomOp *op, const OrtApi *api,
                               const OrtKernelInfo *info, void **kernel);
  OrtStatus *(*KernelComputeV2)(void *kernel, OrtKernelContext *context);
  OrtStatus *(*InferOutputShapeFn)(const struct OrtCustomOp *op, OrtShapeInferContext *ctx);
  int (*GetStartVersion)(const struct OrtCustomOp *op);
  int (*GetEndVersion)(const struct OrtCustomOp *op);
} OrtCustomOp;

/* Positions in the OrtApi function table (onnxruntime_c_api.h, struct OrtApi). */
enum {
  API_CreateStatus = 0,
  API_ReleaseStatus = 93,
  API_KernelInfoGetAttribute_int64 = 86,
  API_KernelContext_GetInput = 90,
  API_KernelContext_GetOutput = 91,
  API_GetTensorMutableData = 51,
  API_GetTensorTypeAndShape = 65,
  API_GetDimensionsCount = 61,
  API_GetDimensions = 62,
  API_ReleaseTensorTypeAndShapeInfo = 99,
  API_CreateCustomOpDomain = 26,
  API_CustomOpDomain_Add = 27,
  API_AddCustomOpDomain = 28,
  API_KernelContext_ParallelFor = 274,
};

typedef void (*api_fn)(void);
static const OrtApi *ort;
#define API(name, type) ((type)(((const api_fn *)(const void *)ort)[API_##name]))

typedef OrtStatus *(*CreateStatus_t)(int code, const char *message);
typedef OrtStatus *(*KernelInfoGetAttribute_int64_t)(const OrtKernelInfo *, const char *, int64_t *);
typedef OrtStatus *(*KernelContext_GetInput_t)(const OrtKernelContext *, size_t, const OrtValue **);
typedef OrtStatus *(*KernelContext_GetOutput_t)(OrtKernelContext *, size_t, const int64_t *, size_t,
                                                OrtValue **);
typedef OrtStatus *(*GetTensorMutableData_t)(OrtValue *, void **);
typedef OrtStatus *(*GetTensorTypeAndShape_t)(const OrtValue *, OrtTensorTypeAndShapeInfo **);
typedef OrtStatus *(*GetDimensionsCount_t)(const OrtTensorTypeAndShapeInfo *, size_t *);
typedef OrtStatus *(*GetDimensions_t)(const OrtTensorTypeAndShapeInfo *, int64_t *, size_t);
typedef void (*ReleaseStatus_t)(OrtStatus *);
typedef void (*ReleaseTensorTypeAndShapeInfo_t)(OrtTensorTypeAndShapeInfo *);
typedef OrtStatus *(*CreateCustomOpDomain_t)(const char *, OrtCustomOpDomain **);
typedef OrtStatus *(*CustomOpDomain_Add_t)(OrtCustomOpDomain *, const OrtCustomOp *);
typedef OrtStatus *(*AddCustomOpDomain_t)(OrtSessionOptions *, OrtCustomOpDomain *);
typedef OrtStatus *(*KernelContext_ParallelFor_t)(const OrtKernelContext *, void (*)(void *, size_t),
                                                  size_t, size_t, void *);

__attribute__((format(printf, 1, 2))) static OrtStatus *fail(const char *format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  return API(CreateStatus, CreateStatus_t)(ORT_INVALID_ARGUMENT, message);
}

#define TRY(call)                 \
  do {                            \
    OrtStatus *status_ = (call);  \
    if (status_) return status_;  \
  } while (0)

/* ---- the kernel --------------------------------------------------------------------- */

typedef struct {
  int64_t bits, block, activation, weighted;
} Kernel;

enum { STAGE_GATE_UP, STAGE_DOWN };
#define ROWS_PER_TASK 16

typedef struct {
  int64_t tokens, k, hidden, inter, experts, bits, block;
  int64_t x_rows_per_token; /* 1: x shared by the k slots; k: one row per slot */
  int64_t activation;
  const uint8_t *gate_up, *down;
  const float *gate_up_s, *down_s;
  int8_t *xq;      /* quantised input rows, (N or N*k, H) */
  float *xs;       /* their block scales */
  float *xc;       /* per block: scale * zero point * sum of the block's inputs */
  float *hidden_f; /* act(gate) * up, (N*k, I) */
  int8_t *hq;      /* quantised hidden rows */
  float *hs;
  float *hc;
  float *out;      /* each slot's expert output, (N*k, H) */
  int64_t *order;  /* slots grouped by expert */
  int64_t *first;  /* order[first[e] .. first[e + 1]) are expert e's slots */
  int64_t *task_expert, *task_row;
  int64_t tasks;
  int stage;
} Work;

/* Quantise `n` floats to int8 per block: q = round(v / s), s = max|v| / 127; c[b] = s *
 * zero_point * sum(q) of the block, what a dot product with the raw (unsigned) codes counts
 * too much. */
static void quantize_row(const float *v, int64_t n, int64_t block, int64_t zero_point, int8_t *q,
                         float *s, float *c) {
  for (int64_t b = 0; b < n / block; ++b) {
    const float *vb = v + b * block;
    float peak = 0.0f;
    for (int64_t i = 0; i < block; ++i) peak = fmaxf(peak, fabsf(vb[i]));
    float scale = peak / 127.0f;
    float inverse = peak > 0.0f ? 127.0f / peak : 0.0f;
    int32_t sum = 0;
    for (int64_t i = 0; i < block; ++i) {
      q[b * block + i] = (int8_t)lrintf(vb[i] * inverse);
      sum += q[b * block + i];
    }
    s[b] = scale;
    c[b] = scale * (float)(zero_point * sum);
  }
}

/* sum over one block of (code - zero point) * q, scalar. */
static int32_t block_dot_scalar(const uint8_t *codes, const int8_t *q, int64_t bits, int64_t block) {
  int32_t sum = 0;
  if (bits == 8) {
    for (int64_t i = 0; i < block; ++i) sum += ((int32_t)codes[i] - 128) * q[i];
  } else {
    int64_t half = block / 2;
    for (int64_t i = 0; i < half; ++i) {
      sum += ((int32_t)(codes[i] & 15) - 8) * q[i];
      sum += ((int32_t)(codes[i] >> 4) - 8) * q[i + half];
    }
  }
  return sum;
}

#ifdef __AVX2__
/* 32 signed weights times 32 signed inputs, as 8 int32 partial sums. The weights are in
 * -128..127 and the inputs in -127..127, so |w| * sign(w)q pairs fit maddubs's int16. */
static inline __m256i dot32(__m256i w, __m256i q) {
  __m256i products = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
  return _mm256_madd_epi16(products, _mm256_set1_epi16(1));
}

static inline __m256i weights32(const uint8_t *codes, int64_t bits) {
  if (bits == 8) {
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)codes), _mm256_set1_epi8((char)0x80));
  }
  __m128i packed = _mm_loadu_si128((const __m128i *)codes);
  __m128i nibble = _mm_set1_epi8(15);
  __m128i low = _mm_and_si128(packed, nibble);
  __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
  return _mm256_sub_epi8(_mm256_set_m128i(high, low), _mm256_set1_epi8(8));
}
#endif

#ifdef SPARSE_EXPERTS_VNNI
/* Two blocks of 32 codes as 64 unsigned bytes, zero point still in: at 4 bits each 16-byte
 * block is its 16 low nibbles then its 16 high ones. */
static inline __m512i codes64(const uint8_t *codes, int64_t bits) {
  if (bits == 8) return _mm512_loadu_si512(codes);
  __m256i packed = _mm256_loadu_si256((const __m256i *)codes);
  __m256i nibble = _mm256_set1_epi8(15);
  __m256i low = _mm256_and_si256(packed, nibble);
  __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
  __m256i first = _mm256_permute2x128_si256(low, high, 0x20);
  __m256i second = _mm256_permute2x128_si256(low, high, 0x31);
  return _mm512_inserti64x4(_mm512_castsi256_si512(first), second, 1);
}

/* sum_b w_scales[b] * q_scales[b] * (codes_b . q_b - zero point * sum(q_b)) for blocks of
 * 32, two blocks per VNNI instruction (unsigned codes times signed inputs, exact int32). */
static float row_dot_vnni(const uint8_t *codes, const float *w_scales, const int8_t *q,
                          const float *q_scales, const float *q_corr, int64_t blocks, int64_t bits) {
  int64_t bytes = 32 * bits / 8;
  const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; b += 2) {
    __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes64(codes + b * bytes, bits),
                                      _mm512_loadu_si512(q + b * 32));
    __m128 pair = _mm_set_ps(0.0f, 0.0f, w_scales[b + 1] * q_scales[b + 1], w_scales[b] * q_scales[b]);
    __m512 scale = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(pair));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
  }
  __m512 corr = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; b += 16) {
    __mmask16 live = blocks - b >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (blocks - b)) - 1u);
    corr = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(live, w_scales + b), _mm512_maskz_loadu_ps(live, q_corr + b), corr);
  }
  return _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(corr);
}
#endif

/* One weight row (codes, block scales) against one quantised input row (scales, zero-point
 * corrections). */
static float row_dot(const uint8_t *codes, const float *w_scales, const int8_t *q,
                     const float *q_scales, const float *q_corr, int64_t columns, int64_t bits,
                     int64_t block) {
  int64_t blocks = columns / block, bytes = block * bits / 8;
#ifdef SPARSE_EXPERTS_VNNI
  if (block == 32 && blocks % 2 == 0) return row_dot_vnni(codes, w_scales, q, q_scales, q_corr, blocks, bits);
#else
  (void)q_corr;
#endif
#ifdef __AVX2__
  if (block == 32) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i sums = dot32(weights32(codes + b * bytes, bits), _mm256_loadu_si256((const __m256i *)(q + b * 32)));
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(w_scales[b] * q_scales[b]), acc);
    }
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    half = _mm_add_ss(half, _mm_movehdup_ps(half));
    return _mm_cvtss_f32(half);
  }
#endif
  float acc = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) {
    acc += (float)block_dot_scalar(codes + b * bytes, q + b * block, bits, block) * w_scales[b] * q_scales[b];
  }
  return acc;
}

static float activate(float gate, int64_t activation) {
  if (activation == 0) return gate / (1.0f + expf(-gate));
  const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
  return 0.5f * gate * (1.0f + tanhf(c * (gate + 0.044715f * gate * gate * gate)));
}

static void run_task(void *data, size_t task) {
  Work *w = (Work *)data;
  int64_t e = w->task_expert[task], row0 = w->task_row[task];
  const int64_t *slots = w->order + w->first[e];
  int64_t count = w->first[e + 1] - w->first[e];
  int64_t bits = w->bits, block = w->block, H = w->hidden, I = w->inter;
  if (w->stage == STAGE_GATE_UP) {
    int64_t row_bytes = H * bits / 8, row_blocks = H / block;
    const uint8_t *codes = w->gate_up + e * 2 * I * row_bytes;
    const float *scales = w->gate_up_s + e * 2 * I * row_blocks;
    int64_t row1 = row0 + ROWS_PER_TASK < I ? row0 + ROWS_PER_TASK : I;
    for (int64_t r = row0; r < row1; ++r) {
      for (int64_t t = 0; t < count; ++t) {
        int64_t slot = slots[t];
        int64_t x_row = w->x_rows_per_token == 1 ? slot / w->k : slot;
        const int8_t *q = w->xq + x_row * H;
        const float *qs = w->xs + x_row * row_blocks, *qc = w->xc + x_row * row_blocks;
        float gate = row_dot(codes + r * row_bytes, scales + r * row_blocks, q, qs, qc, H, bits, block);
        float up = row_dot(codes + (I + r) * row_bytes, scales + (I + r) * row_blocks, q, qs, qc, H, bits, block);
        w->hidden_f[slot * I + r] = activate(gate, w->activation) * up;
      }
    }
  } else {
    int64_t row_bytes = I * bits / 8, row_blocks = I / block;
    const uint8_t *codes = w->down + e * H * row_bytes;
    const float *scales = w->down_s + e * H * row_blocks;
    int64_t row1 = row0 + ROWS_PER_TASK < H ? row0 + ROWS_PER_TASK : H;
    for (int64_t r = row0; r < row1; ++r) {
      for (int64_t t = 0; t < count; ++t) {
        int64_t slot = slots[t];
        w->out[slot * H + r] = row_dot(codes + r * row_bytes, scales + r * row_blocks, w->hq + slot * I,
                                       w->hs + slot * (I / block), w->hc + slot * (I / block), I, bits, block);
      }
    }
  }
}

/* Tasks of ROWS_PER_TASK rows of `rows` for every expert some slot selected. */
static void plan_tasks(Work *w, int64_t rows) {
  w->tasks = 0;
  for (int64_t e = 0; e < w->experts; ++e) {
    if (w->first[e + 1] == w->first[e]) continue;
    for (int64_t r = 0; r < rows; r += ROWS_PER_TASK) {
      w->task_expert[w->tasks] = e;
      w->task_row[w->tasks] = r;
      ++w->tasks;
    }
  }
}

static OrtStatus *run_stage(OrtKernelContext *context, Work *w, int stage, int64_t rows) {
  w->stage = stage;
  plan_tasks(w, rows);
  if (w->tasks == 1) {
    run_task(w, 0);
    return NULL;
  }
  return API(KernelContext_ParallelFor, KernelContext_ParallelFor_t)(context, run_task, (size_t)w->tasks, 0, w);
}

typedef struct {
  const void *data;
  int64_t dims[4];
  size_t rank;
} Tensor;

static OrtStatus *input(OrtKernelContext *context, size_t i, Tensor *t) {
  const OrtValue *value = NULL;
  OrtTensorTypeAndShapeInfo *info = NULL;
  TRY(API(KernelContext_GetInput, KernelContext_GetInput_t)(context, i, &value));
  if (value == NULL) return fail("SparseExperts: input %zu is missing", i);
  TRY(API(GetTensorTypeAndShape, GetTensorTypeAndShape_t)(value, &info));
  OrtStatus *status = API(GetDimensionsCount, GetDimensionsCount_t)(info, &t->rank);
  if (status == NULL && (t->rank < 1 || t->rank > 4)) {
    status = fail("SparseExperts: input %zu has rank %zu (expected 1 to 4)", i, t->rank);
  }
  if (status == NULL) status = API(GetDimensions, GetDimensions_t)(info, t->dims, t->rank);
  API(ReleaseTensorTypeAndShapeInfo, ReleaseTensorTypeAndShapeInfo_t)(info);
  if (status) return status;
  void *data = NULL;
  TRY(API(GetTensorMutableData, GetTensorMutableData_t)((OrtValue *)value, &data));
  t->data = data;
  return NULL;
}

static OrtStatus *expect(const Tensor *t, const char *name, size_t rank, const int64_t *dims) {
  int same = t->rank == rank;
  for (size_t i = 0; same && i < rank; ++i) same = t->dims[i] == dims[i];
  if (same) return NULL;
  char shape[128] = "", want[128] = "";
  for (size_t i = 0; i < t->rank; ++i) {
    snprintf(shape + strlen(shape), sizeof shape - strlen(shape), i ? ", %lld" : "%lld", (long long)t->dims[i]);
  }
  for (size_t i = 0; i < rank; ++i) {
    snprintf(want + strlen(want), sizeof want - strlen(want), i ? ", %lld" : "%lld", (long long)dims[i]);
  }
  return fail("SparseExperts: %s has shape (%s), expected (%s)", name, shape, want);
}

static OrtStatus *compute_into(OrtKernelContext *context, const Kernel *kernel, Work *w, Tensor *in) {
  for (size_t i = 0; i < 7; ++i) TRY(input(context, i, &in[i]));
  const Tensor *x = &in[0], *index = &in[1], *gate_up = &in[3], *down = &in[5];
  if (index->rank < 1 || index->rank > 3) {
    return fail("SparseExperts: index must be (..., k) of rank 1 to 3, has rank %zu", index->rank);
  }
  if (gate_up->rank != 3) return fail("SparseExperts: gate_up must be (experts, 2 * inter, bytes)");
  if (down->rank != 3) return fail("SparseExperts: down must be (experts, hidden, bytes)");
  /* Tokens are the leading dimensions of index (..., k); x is (..., H) shared by the k
     slots, or (..., k, H) with one row per slot; the output is (..., H). */
  size_t lead = index->rank - 1;
  w->tokens = 1;
  for (size_t i = 0; i < lead; ++i) w->tokens *= index->dims[i];
  w->k = index->dims[lead];
  w->experts = gate_up->dims[0];
  w->inter = gate_up->dims[1] / 2;
  w->hidden = down->dims[1];
  w->bits = kernel->bits;
  w->block = kernel->block;
  w->activation = kernel->activation;
  int64_t N = w->tokens, k = w->k, E = w->experts, I = w->inter, H = w->hidden, B = w->block;
  if (H % B || I % B) {
    return fail("SparseExperts: hidden %lld and inter %lld must be multiples of block_size %lld",
                (long long)H, (long long)I, (long long)B);
  }
  int per_slot = x->rank == index->rank + 1;
  int64_t x_dims[4], out_dims[4];
  for (size_t i = 0; i < lead; ++i) x_dims[i] = out_dims[i] = index->dims[i];
  x_dims[lead] = per_slot ? k : H;
  x_dims[lead + 1] = H;
  out_dims[lead] = H;
  w->x_rows_per_token = per_slot ? k : 1;
  TRY(expect(x, "x", lead + 1 + (size_t)per_slot, x_dims));
  TRY(expect(&in[2], "weight", index->rank, index->dims));
  int64_t gu[3] = {E, 2 * I, H * w->bits / 8}, gus[3] = {E, 2 * I, H / B};
  int64_t dn[3] = {E, H, I * w->bits / 8}, dns[3] = {E, H, I / B};
  TRY(expect(gate_up, "gate_up", 3, gu));
  TRY(expect(&in[4], "gate_up_scales", 3, gus));
  TRY(expect(down, "down", 3, dn));
  TRY(expect(&in[6], "down_scales", 3, dns));
  w->gate_up = (const uint8_t *)gate_up->data;
  w->gate_up_s = (const float *)in[4].data;
  w->down = (const uint8_t *)down->data;
  w->down_s = (const float *)in[6].data;

  OrtValue *out_value = NULL;
  void *out_data = NULL;
  TRY(API(KernelContext_GetOutput, KernelContext_GetOutput_t)(context, 0, out_dims, lead + 1, &out_value));
  TRY(API(GetTensorMutableData, GetTensorMutableData_t)(out_value, &out_data));
  float *y = (float *)out_data;
  if (N == 0) return NULL;

  int64_t slots = N * k, x_rows = N * w->x_rows_per_token;
  const int64_t *experts_of = (const int64_t *)index->data;
  w->first = calloc((size_t)E + 1, sizeof(int64_t));
  w->order = malloc((size_t)slots * sizeof(int64_t));
  w->task_expert = malloc((size_t)(slots * ((H > I ? H : I) / ROWS_PER_TASK + 1)) * sizeof(int64_t));
  w->task_row = malloc((size_t)(slots * ((H > I ? H : I) / ROWS_PER_TASK + 1)) * sizeof(int64_t));
  w->xq = malloc((size_t)(x_rows * H));
  w->xs = malloc((size_t)(x_rows * (H / B)) * sizeof(float));
  w->xc = malloc((size_t)(x_rows * (H / B)) * sizeof(float));
  w->hidden_f = malloc((size_t)(slots * I) * sizeof(float));
  w->hq = malloc((size_t)(slots * I));
  w->hs = malloc((size_t)(slots * (I / B)) * sizeof(float));
  w->hc = malloc((size_t)(slots * (I / B)) * sizeof(float));
  w->out = malloc((size_t)(slots * H) * sizeof(float));
  if (!w->first || !w->order || !w->task_expert || !w->task_row || !w->xq || !w->xs || !w->xc ||
      !w->hidden_f || !w->hq || !w->hs || !w->hc || !w->out) {
    return API(CreateStatus, CreateStatus_t)(ORT_FAIL, "SparseExperts: out of memory");
  }
  for (int64_t s = 0; s < slots; ++s) {
    int64_t e = experts_of[s];
    if (e < 0 || e >= E) {
      return fail("SparseExperts: token %lld selects expert %lld of %lld", (long long)(s / k),
                  (long long)e, (long long)E);
    }
    ++w->first[e + 1];
  }
  for (int64_t e = 0; e < E; ++e) w->first[e + 1] += w->first[e];
  int64_t *fill = malloc((size_t)E * sizeof(int64_t));
  if (!fill) return API(CreateStatus, CreateStatus_t)(ORT_FAIL, "SparseExperts: out of memory");
  memcpy(fill, w->first, (size_t)E * sizeof(int64_t));
  for (int64_t s = 0; s < slots; ++s) w->order[fill[experts_of[s]]++] = s;
  free(fill);

  const float *xf = (const float *)x->data;
  int64_t zero_point = (int64_t)1 << (w->bits - 1);
  for (int64_t r = 0; r < x_rows; ++r) {
    quantize_row(xf + r * H, H, B, zero_point, w->xq + r * H, w->xs + r * (H / B), w->xc + r * (H / B));
  }
  TRY(run_stage(context, w, STAGE_GATE_UP, I));
  for (int64_t s = 0; s < slots; ++s) {
    quantize_row(w->hidden_f + s * I, I, B, zero_point, w->hq + s * I, w->hs + s * (I / B), w->hc + s * (I / B));
  }
  TRY(run_stage(context, w, STAGE_DOWN, H));

  const float *weights = (const float *)in[2].data;
  for (int64_t n = 0; n < N; ++n) {
    float *yn = y + n * H;
    memset(yn, 0, (size_t)H * sizeof(float));
    for (int64_t j = 0; j < k; ++j) {
      float scale = kernel->weighted ? weights[n * k + j] : 1.0f;
      const float *o = w->out + (n * k + j) * H;
      for (int64_t h = 0; h < H; ++h) yn[h] += scale * o[h];
    }
  }
  return NULL;
}

static OrtStatus *compute(void *kernel, OrtKernelContext *context) {
  Work work;
  Tensor inputs[7];
  memset(&work, 0, sizeof work);
  OrtStatus *status = compute_into(context, (const Kernel *)kernel, &work, inputs);
  free(work.first);
  free(work.order);
  free(work.task_expert);
  free(work.task_row);
  free(work.xq);
  free(work.xs);
  free(work.xc);
  free(work.hidden_f);
  free(work.hq);
  free(work.hs);
  free(work.hc);
  free(work.out);
  return status;
}

static OrtStatus *attribute(const OrtKernelInfo *info, const char *name, int64_t fallback, int64_t *value) {
  *value = fallback;
  OrtStatus *status = API(KernelInfoGetAttribute_int64, KernelInfoGetAttribute_int64_t)(info, name, value);
  if (status == NULL) return NULL;
  if (fallback >= 0) {
    /* absent optional attribute: keep the default (the error status is dropped) */
    API(ReleaseStatus, ReleaseStatus_t)(status);
    *value = fallback;
    return NULL;
  }
  return status;
}

static OrtStatus *create_kernel(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info, void **out) {
  (void)op;
  (void)api;
  Kernel *kernel = calloc(1, sizeof(Kernel));
  if (!kernel) return API(CreateStatus, CreateStatus_t)(ORT_FAIL, "SparseExperts: out of memory");
  OrtStatus *status = attribute(info, "bits", -1, &kernel->bits);
  if (!status) status = attribute(info, "block_size", -1, &kernel->block);
  if (!status) status = attribute(info, "activation", -1, &kernel->activation);
  if (!status) status = attribute(info, "weighted", 1, &kernel->weighted);
  if (!status && kernel->bits != 8 && kernel->bits != 4) {
    status = fail("SparseExperts: bits must be 8 or 4, got %lld", (long long)kernel->bits);
  }
  if (!status && (kernel->block < 16 || kernel->block % 16)) {
    status = fail("SparseExperts: block_size must be a multiple of 16, got %lld", (long long)kernel->block);
  }
  if (!status && kernel->activation != 0 && kernel->activation != 1) {
    status = fail("SparseExperts: activation must be 0 (SiLU) or 1 (GELU tanh), got %lld",
                  (long long)kernel->activation);
  }
  if (status) {
    free(kernel);
    return status;
  }
  *out = kernel;
  return NULL;
}

static void destroy_kernel(void *kernel) { free(kernel); }
static const char *op_name(const OrtCustomOp *op) { (void)op; return "SparseExperts"; }
static const char *op_provider(const OrtCustomOp *op) { (void)op; return "CPUExecutionProvider"; }
static const int input_types[7] = {TYPE_FLOAT, TYPE_INT64, TYPE_FLOAT, TYPE_UINT8, TYPE_FLOAT, TYPE_UINT8, TYPE_FLOAT};
static int input_type(const OrtCustomOp *op, size_t i) { (void)op; return i < 7 ? input_types[i] : 0; }
static size_t input_count(const OrtCustomOp *op) { (void)op; return 7; }
static int output_type(const OrtCustomOp *op, size_t i) { (void)op; (void)i; return TYPE_FLOAT; }
static size_t output_count(const OrtCustomOp *op) { (void)op; return 1; }
static int required(const OrtCustomOp *op, size_t i) { (void)op; (void)i; return INPUT_OUTPUT_REQUIRED; }
static int memory_type(const OrtCustomOp *op, size_t i) { (void)op; (void)i; return MEM_DEFAULT; }
static int one(const OrtCustomOp *op) { (void)op; return 1; }
static int version_start(const OrtCustomOp *op) { (void)op; return 1; }
static int version_end(const OrtCustomOp *op) { (void)op; return 2147483647; }

static OrtCustomOp sparse_experts_op;

__attribute__((visibility("default"))) OrtStatus *RegisterCustomOps(OrtSessionOptions *options,
                                                                     const OrtApiBase *base) {
  ort = base->GetApi(ORT_API_VERSION_USED);
  if (ort == NULL) {
    fprintf(stderr, "subtitled SparseExperts: ONNX Runtime %s has no C API version %u\n",
            base->GetVersionString(), ORT_API_VERSION_USED);
    return NULL; /* nothing to report the error with; the session then lacks the op */
  }
  OrtCustomOp *op = &sparse_experts_op;
  memset(op, 0, sizeof *op);
  op->version = ORT_API_VERSION_USED;
  op->GetName = op_name;
  op->GetExecutionProviderType = op_provider;
  op->GetInputType = input_type;
  op->GetInputTypeCount = input_count;
  op->GetOutputType = output_type;
  op->GetOutputTypeCount = output_count;
  op->KernelDestroy = destroy_kernel;
  op->GetInputCharacteristic = required;
  op->GetOutputCharacteristic = required;
  op->GetInputMemoryType = memory_type;
  op->GetVariadicInputMinArity = one;
  op->GetVariadicInputHomogeneity = one;
  op->GetVariadicOutputMinArity = one;
  op->GetVariadicOutputHomogeneity = one;
  op->CreateKernelV2 = create_kernel;
  op->KernelComputeV2 = compute;
  op->GetStartVersion = version_start;
  op->GetEndVersion = version_end;
  OrtCustomOpDomain *domain = NULL;
  TRY(API(CreateCustomOpDomain, CreateCustomOpDomain_t)("ai.subtitled", &domain));
  TRY(API(CustomOpDomain_Add, CustomOpDomain_Add_t)(domain, op));
  return API(AddCustomOpDomain, AddCustomOpDomain_t)(options, domain);
}
