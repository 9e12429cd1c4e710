/* Test plugins for tests/python/test_backend_plugin.py: one source, one deliberate defect per
 * -DBAD_<X> flag, each of which tandem must refuse or catch with a clear error (never a crash of
 * the host):
 *   BAD_NO_SYMBOL     exports no tandem_backend_get_api (not a tandem plugin)
 *   BAD_MAJOR         built for ABI major TDB_ABI_MAJOR + 1
 *   BAD_REFUSE        tandem_backend_get_api returns NULL
 *   BAD_NULL_ENTRY    leaves a required entry (execute) NULL
 *   BAD_EXECUTE       execute reports an error for gelu (with a last_error message)
 *   BAD_LIES          claims to support softmax, computes it wrong (conform must FAIL it)
 * Without a flag it is a correct one-op plugin: gelu in f32. EMPTY: no op at all (every node on
 * the CPU fallback, so a run must be bit-identical to --backend cpu). */
#include <tandem/backend_abi.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local const char* g_error = "";
static const char* b_last_error(void) { return g_error; }
struct tdb_device { int unused; };
static struct tdb_device g_dev;

static tdb_status b_init(const tdb_host* h, const char* o) { (void)h; (void)o; return TDB_OK; }
static int32_t b_count(void) { return 1; }
static tdb_status b_open(int32_t i, tdb_device** out) { (void)i; *out = &g_dev; return TDB_OK; }
static void b_close(tdb_device* d) { (void)d; }
static tdb_status b_info(tdb_device* d, tdb_device_info* out) {
  (void)d;
  out->name = "bad plugin test device";
  out->vendor = "tests";
  return TDB_OK;
}
static tdb_status b_alloc(tdb_device* d, uint64_t n, tdb_buffer** out) {
  (void)d;
  *out = (tdb_buffer*)malloc((size_t)n + 64);
  return *out ? TDB_OK : TDB_OUT_OF_MEMORY;
}
static void b_free(tdb_device* d, tdb_buffer* b) { (void)d; free(b); }
static tdb_status b_write(tdb_device* d, tdb_buffer* dst, uint64_t off, const void* src, uint64_t n) {
  (void)d; memcpy((char*)dst + off, src, (size_t)n); return TDB_OK;
}
static tdb_status b_read(tdb_device* d, const tdb_buffer* src, uint64_t off, void* dst, uint64_t n) {
  (void)d; memcpy(dst, (const char*)src + off, (size_t)n); return TDB_OK;
}
static tdb_status b_copy(tdb_device* d, tdb_buffer* dst, uint64_t doff, const tdb_buffer* src, uint64_t soff, uint64_t n) {
  (void)d; memmove((char*)dst + doff, (const char*)src + soff, (size_t)n); return TDB_OK;
}
static int32_t b_lookup(const char* op, uint32_t v) {
  (void)v;
#ifdef EMPTY
  return -1;
#endif
  if (strcmp(op, "gelu") == 0) return 0;
#ifdef BAD_LIES
  if (strcmp(op, "softmax") == 0) return 1;
#endif
  return -1;
}
static int32_t b_supports(tdb_device* d, const tdb_node* n, char* why, size_t len) {
  (void)d; (void)why; (void)len;
  return n->output->dtype == TDB_F32;
}
static int64_t numel(const tdb_tensor* t) {
  int64_t n = 1;
  for (int32_t i = 0; i < t->ndim; ++i) n *= t->shape[i];
  return n;
}
static tdb_status b_execute(tdb_device* d, const tdb_node* n) {
  (void)d;
#ifdef BAD_EXECUTE
  g_error = "device lost (injected by bad_plugin.c)";
  return TDB_DEVICE_ERROR;
#endif
  const float* x = (const float*)((const char*)n->inputs[0]->buffer + n->inputs[0]->offset);
  float* y = (float*)((char*)n->output->buffer + n->output->offset);
  const int64_t m = numel(n->output);
  for (int64_t i = 0; i < m; ++i) {
    const float v = x[i];
    y[i] = n->op_id == 0 ? 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)))
                         : 1.0f / (float)m; /* BAD_LIES: "softmax" as a uniform distribution */
  }
  return TDB_OK;
}
static tdb_status b_sync(tdb_device* d) { (void)d; return TDB_OK; }

#ifndef BAD_NO_SYMBOL
TDB_EXPORT const tdb_backend_api* tandem_backend_get_api(uint32_t host_major, uint32_t host_minor) {
  static tdb_backend_api a;
  (void)host_major; (void)host_minor;
#ifdef BAD_REFUSE
  return NULL;
#endif
  a.struct_size = sizeof a;
  a.abi_major = TDB_ABI_MAJOR;
#ifdef BAD_MAJOR
  a.abi_major = TDB_ABI_MAJOR + 1;
#endif
  a.abi_minor = 3;
  a.name = "bad";
  a.version = "0";
  a.init = b_init;
  a.last_error = b_last_error;
  a.device_count = b_count;
  a.device_open = b_open;
  a.device_close = b_close;
  a.device_info = b_info;
  a.buffer_alloc = b_alloc;
  a.buffer_free = b_free;
  a.buffer_write = b_write;
  a.buffer_read = b_read;
  a.buffer_copy = b_copy;
  a.op_lookup = b_lookup;
  a.supports = b_supports;
  a.execute = b_execute;
#ifdef BAD_NULL_ENTRY
  a.execute = NULL;
#endif
  a.synchronize = b_sync;
  return &a;
}
#else
int not_a_tandem_plugin(void) { return 42; }
#endif
