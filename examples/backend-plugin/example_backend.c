/* A minimal tandem backend plugin in plain C99: the template a vendor starts from.
 *
 * It runs five ops in f32 (matmul, add, gelu and the backward nodes they need: matmul's backward
 * is matmul, add's is sum_to, gelu's is gelu_grad) with simple loops over host memory. Everything
 * else it declines in supports(), and tandem runs those nodes on the CPU (--fallback cpu, the
 * default). Replace the loops with your device's kernels and the memory functions with your
 * allocator and copies; README.md walks through it.
 *
 * TANDEM_EXAMPLE_BUG=gelu (environment, read at init) breaks the gelu kernel on purpose (the cubic
 * term computed as x^2): a rehearsal that `tandem diff` names the first divergent node. */
#include <tandem/backend_abi.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors: a thread-local message, read back by the host through last_error ---- */
static _Thread_local char g_error[256];
static tdb_status fail(tdb_status st, const char* msg, const char* detail) {
  snprintf(g_error, sizeof g_error, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
  return st;
}
static const char* ex_last_error(void) { return g_error; }

static int g_bug_gelu = 0;

/* ---- device and memory: one device, buffers are host memory ---- */
struct tdb_device { int index; };
static struct tdb_device g_device = {0};

static tdb_status ex_init(const tdb_host* host, const char* options) {
  (void)options;
  if (!host || host->struct_size < TDB_STRUCT_SIZE(tdb_host, abi_minor) || host->abi_major != TDB_ABI_MAJOR)
    return fail(TDB_INVALID_ARGUMENT, "example: host ABI major differs", NULL);
  const char* bug = getenv("TANDEM_EXAMPLE_BUG");
  g_bug_gelu = bug && strcmp(bug, "gelu") == 0;
  if (g_bug_gelu && host->struct_size >= TDB_STRUCT_SIZE(tdb_host, user) && host->log)
    host->log(host->user, 1, "example: TANDEM_EXAMPLE_BUG=gelu: the gelu kernel is deliberately wrong");
  return TDB_OK;
}
static void ex_shutdown(void) {}
static int32_t ex_device_count(void) { return 1; }
static tdb_status ex_device_open(int32_t index, tdb_device** out) {
  if (index != 0) return fail(TDB_INVALID_ARGUMENT, "example: only device 0 exists", NULL);
  *out = &g_device;
  return TDB_OK;
}
static void ex_device_close(tdb_device* d) { (void)d; }
static tdb_status ex_device_info(tdb_device* d, tdb_device_info* out) {
  (void)d;
  if (out->struct_size < TDB_STRUCT_SIZE(tdb_device_info, flags)) return fail(TDB_INVALID_ARGUMENT, "device_info: struct too small", NULL);
  out->name = "example device (host memory, plain C loops)";
  out->vendor = "tandem examples";
  out->mem_total = out->mem_free = 0;
  out->alignment = 64;
  out->flags = TDB_DEVICE_DETERMINISTIC;
  return TDB_OK;
}
static tdb_status ex_buffer_alloc(tdb_device* d, uint64_t bytes, tdb_buffer** out) {
  (void)d;
  void* p = aligned_alloc(64, (size_t)((bytes + 63) / 64 * 64));
  if (!p) return fail(TDB_OUT_OF_MEMORY, "example: out of memory", NULL);
  *out = (tdb_buffer*)p;
  return TDB_OK;
}
static void ex_buffer_free(tdb_device* d, tdb_buffer* b) { (void)d; free(b); }
static tdb_status ex_buffer_write(tdb_device* d, tdb_buffer* dst, uint64_t off, const void* src, uint64_t n) {
  (void)d;
  memcpy((char*)dst + off, src, (size_t)n);
  return TDB_OK;
}
static tdb_status ex_buffer_read(tdb_device* d, const tdb_buffer* src, uint64_t off, void* dst, uint64_t n) {
  (void)d;
  memcpy(dst, (const char*)src + off, (size_t)n);
  return TDB_OK;
}
static tdb_status ex_buffer_copy(tdb_device* d, tdb_buffer* dst, uint64_t doff, const tdb_buffer* src, uint64_t soff,
                                 uint64_t n) {
  (void)d;
  memmove((char*)dst + doff, (const char*)src + soff, (size_t)n);
  return TDB_OK;
}

/* ---- ops: ids are indices into this table ---- */
enum { OP_MATMUL, OP_ADD, OP_SUM_TO, OP_GELU, OP_GELU_GRAD, OP_COUNT };
static const char* const kOps[OP_COUNT] = {"matmul", "add", "sum_to", "gelu", "gelu_grad"};

static int32_t ex_op_lookup(const char* op, uint32_t version) {
  if (version != 1) return -1; /* an op version we were not written for */
  for (int32_t i = 0; i < OP_COUNT; ++i)
    if (strcmp(op, kOps[i]) == 0) return i;
  return -1;
}

static int64_t numel(const tdb_tensor* t) {
  int64_t n = 1;
  for (int32_t i = 0; i < t->ndim; ++i) n *= t->shape[i];
  return n;
}
static int contiguous(const tdb_tensor* t) {
  int64_t s = 1;
  for (int32_t i = t->ndim; i-- > 0;) {
    if (t->strides[i] != s) return 0;
    s *= t->shape[i];
  }
  return 1;
}
static float* data(const tdb_tensor* t) { return (float*)((char*)t->buffer + t->offset); }
/* An integer attribute (booleans are 0/1); def when absent. */
static int64_t attr_i(const tdb_node* n, const char* name, int64_t def) {
  for (int32_t i = 0; i < n->n_attrs; ++i)
    if (strcmp(n->attrs[i]->name, name) == 0 && n->attrs[i]->type == TDB_ATTR_I64) return n->attrs[i]->i;
  return def;
}

/* matmul: out = op(A) op(B). B 2-D: A's leading dims are rows (A^T: A is 2-D). B batched (rank >= 3):
 * A and B share their leading dims, one product per batch entry. */
typedef struct { int64_t batch, m, n, k, a_rows, a_cols, b_rows, b_cols; int ta, tb, batched; } mm_dims;
static int mm_plan(const tdb_node* node, mm_dims* d) {
  const tdb_tensor* a = node->inputs[0];
  const tdb_tensor* b = node->inputs[1];
  d->ta = (int)attr_i(node, "trans_a", 0);
  d->tb = (int)attr_i(node, "trans_b", 0);
  if (a->ndim < 1 || b->ndim < 2) return 0;
  d->b_rows = b->shape[b->ndim - 2];
  d->b_cols = b->shape[b->ndim - 1];
  d->a_cols = a->shape[a->ndim - 1];
  d->batched = b->ndim > 2;
  if (d->batched) {
    if (a->ndim != b->ndim) return 0;
    d->a_rows = a->shape[a->ndim - 2];
    d->batch = numel(a) / (d->a_rows * d->a_cols);
  } else {
    d->a_rows = numel(a) / d->a_cols;
    d->batch = 1;
  }
  d->m = d->ta ? d->a_cols : d->a_rows;
  d->k = d->ta ? d->a_rows : d->a_cols;
  d->n = d->tb ? d->b_rows : d->b_cols;
  return (d->tb ? d->b_cols : d->b_rows) == d->k;
}
static void k_matmul(const tdb_node* node) {
  mm_dims d;
  mm_plan(node, &d);
  const float* A = data(node->inputs[0]);
  const float* B = data(node->inputs[1]);
  float* C = data(node->output);
  for (int64_t p = 0; p < d.batch; ++p) {
    const float* a = A + p * d.a_rows * d.a_cols;
    const float* b = B + (d.batched ? p * d.b_rows * d.b_cols : 0);
    float* c = C + p * d.m * d.n;
    for (int64_t i = 0; i < d.m; ++i) {
      float* ci = c + i * d.n;
      if (d.tb && !d.ta) { /* rows of A against rows of B: contiguous dot products */
        for (int64_t j = 0; j < d.n; ++j) {
          float acc = 0.0f;
          for (int64_t kk = 0; kk < d.k; ++kk) acc += a[i * d.a_cols + kk] * b[j * d.b_cols + kk];
          ci[j] = acc;
        }
        continue;
      }
      for (int64_t j = 0; j < d.n; ++j) ci[j] = 0.0f;
      for (int64_t kk = 0; kk < d.k; ++kk) {
        const float av = d.ta ? a[kk * d.a_cols + i] : a[i * d.a_cols + kk];
        if (d.tb)
          for (int64_t j = 0; j < d.n; ++j) ci[j] += av * b[j * d.b_cols + kk];
        else
          for (int64_t j = 0; j < d.n; ++j) ci[j] += av * b[kk * d.b_cols + j];
      }
    }
  }
}
/* add: b broadcast over a's leading dims (b's shape is a suffix of a's). */
static void k_add(const tdb_node* node) {
  const float* a = data(node->inputs[0]);
  const float* b = data(node->inputs[1]);
  float* out = data(node->output);
  const int64_t n = numel(node->inputs[0]), nb = numel(node->inputs[1]);
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i % nb];
}
/* sum_to: x's leading dims summed away (the output's shape is a suffix of x's). */
static void k_sum_to(const tdb_node* node) {
  const float* x = data(node->inputs[0]);
  float* out = data(node->output);
  const int64_t n = numel(node->inputs[0]), no = numel(node->output);
  for (int64_t j = 0; j < no; ++j) out[j] = 0.0f;
  for (int64_t i = 0; i < n; ++i) out[i % no] += x[i];
}
/* GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static const float kGeluC = 0.7978845608f;
static void k_gelu(const tdb_node* node) {
  const float* x = data(node->inputs[0]);
  float* out = data(node->output);
  const int64_t n = numel(node->inputs[0]);
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float cube = g_bug_gelu ? v * v : v * v * v; /* the rehearsal bug: x^2 for x^3 */
    out[i] = 0.5f * v * (1.0f + tanhf(kGeluC * (v + 0.044715f * cube)));
  }
}
/* gelu_grad(x, dout) = dout * d gelu(x) / dx */
static void k_gelu_grad(const tdb_node* node) {
  const float* x = data(node->inputs[0]);
  const float* g = data(node->inputs[1]);
  float* out = data(node->output);
  const int64_t n = numel(node->inputs[0]);
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float t = tanhf(kGeluC * (v + 0.044715f * v * v * v));
    const float dt = kGeluC * (1.0f + 3.0f * 0.044715f * v * v) * (1.0f - t * t);
    out[i] = g[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
  }
}

/* supports: pure and thread-safe; says why not. */
static int32_t decline(char* why, size_t len, const char* reason) {
  snprintf(why, len, "%s", reason);
  return 0;
}
static int32_t ex_supports(tdb_device* d, const tdb_node* node, char* why, size_t why_len) {
  (void)d;
  if (node->struct_size < TDB_STRUCT_SIZE(tdb_node, attrs)) return decline(why, why_len, "node struct too small");
  if (node->op_id < 0 || node->op_id >= OP_COUNT || node->op_version != 1) return decline(why, why_len, "unknown op");
  if (node->output->dtype != TDB_F32) return decline(why, why_len, "f32 only");
  for (int32_t i = 0; i < node->n_inputs; ++i)
    if (node->inputs[i]->dtype != TDB_F32) return decline(why, why_len, "f32 inputs only");
  if (node->op_id == OP_MATMUL) {
    mm_dims dims;
    if (node->n_inputs != 2 || !mm_plan(node, &dims)) return decline(why, why_len, "matmul shapes not handled");
  }
  return 1;
}

static tdb_status ex_execute(tdb_device* d, const tdb_node* node) {
  (void)d;
  for (int32_t i = 0; i < node->n_inputs; ++i)
    if (!contiguous(node->inputs[i])) return fail(TDB_INVALID_ARGUMENT, "example: non-contiguous input at node", node->name);
  switch (node->op_id) {
    case OP_MATMUL: k_matmul(node); break;
    case OP_ADD: k_add(node); break;
    case OP_SUM_TO: k_sum_to(node); break;
    case OP_GELU: k_gelu(node); break;
    case OP_GELU_GRAD: k_gelu_grad(node); break;
    default: return fail(TDB_UNSUPPORTED, "example: no kernel for op", node->op);
  }
  return TDB_OK;
}
static tdb_status ex_synchronize(tdb_device* d) { (void)d; return TDB_OK; } /* every kernel is synchronous */

/* ---- the table: optional entries (buffer_zero, the optimizer kernels) left NULL ---- */
TDB_EXPORT const tdb_backend_api* tandem_backend_get_api(uint32_t host_major, uint32_t host_minor) {
  static tdb_backend_api api;
  (void)host_minor;
  if (host_major != TDB_ABI_MAJOR) return NULL; /* the host reports both versions */
  api.struct_size = sizeof api;
  api.abi_major = TDB_ABI_MAJOR;
  api.abi_minor = TDB_ABI_MINOR;
  api.name = "example";
  api.version = "0.1";
  api.init = ex_init;
  api.shutdown = ex_shutdown;
  api.last_error = ex_last_error;
  api.device_count = ex_device_count;
  api.device_open = ex_device_open;
  api.device_close = ex_device_close;
  api.device_info = ex_device_info;
  api.buffer_alloc = ex_buffer_alloc;
  api.buffer_free = ex_buffer_free;
  api.buffer_write = ex_buffer_write;
  api.buffer_read = ex_buffer_read;
  api.buffer_copy = ex_buffer_copy;
  api.op_lookup = ex_op_lookup;
  api.supports = ex_supports;
  api.execute = ex_execute;
  api.synchronize = ex_synchronize;
  return &api;
}
