/* tandem backend plugin ABI: the one header an out-of-tree backend is built against.
 *
 * A plugin is a shared library (libtandem-backend-NAME.so) that exports exactly one symbol,
 * tandem_backend_get_api, returning a table of C function pointers. tandem loads it with
 * `--backend plugin:/path/libtandem-backend-NAME.so`, or `--backend NAME` when the file sits in a
 * directory listed in TANDEM_BACKEND_PATH. C99, no tandem C++ type, no exception and no C++
 * object ever crosses this boundary.
 *
 * Versions. TDB_ABI_MAJOR changes only when the ABI breaks: the host refuses a plugin whose major
 * differs, naming both versions. TDB_ABI_MINOR grows when entries are appended: fields and
 * function pointers are only ever added at the end of a struct, and every entry added after 1.0
 * is optional (NULL means "not provided"; the host then does without it).
 *
 * Structs. Every struct starts with `size_t struct_size`, set by whoever fills it to
 * sizeof(the struct as that side was compiled). A receiver reads a field only when struct_size
 * covers it (check with >= the size it needs, never ==), so old plugins run on new hosts and new
 * plugins on old hosts as far as the entries they share.
 *
 * Ownership and lifetime. Whoever allocates frees: buffers only through buffer_free; strings the
 * plugin returns (names, last_error) stay valid as long as the plugin (last_error: until the same
 * thread's next call into the plugin); arrays the host passes (nodes, tensors, shapes, attributes)
 * are valid only during the call: copy what you keep.
 *
 * Threads. init is called once, before anything else. supports, op_lookup and device_info must be
 * pure and thread-safe (the host may plan on several threads). Calls that touch a device
 * (buffer_*, execute, synchronize, the optimizer kernels) are serialized per device by the host.
 *
 * Errors. A function returning tdb_status reports failure with a non-TDB_OK value and sets a
 * thread-local message read back with last_error(); the host turns it into one error line naming
 * the plugin, the node and the op. Never throw across this boundary, never abort the host.
 *
 * Ops. tandem's ops are named by string plus an op version (all 1 today; an op's version grows
 * when its attributes or meaning change). The host resolves each name once, at plan time, with
 * op_lookup; the plugin's id then comes back in every node. Each node has one output. Op meanings,
 * shapes and attributes are tandem's op definitions (src/ops/); `tandem conform` checks a
 * plugin against their float64 references. Two ops also write one input in place, the KV cache of
 * decoding: attention_cached (input 1) and attention_latent (input 2).
 */
#ifndef TANDEM_BACKEND_ABI_H
#define TANDEM_BACKEND_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TDB_ABI_MAJOR 1
#define TDB_ABI_MINOR 0

/* The size of a struct up to and including `field`: what a receiver needs when it reads `field`. */
#define TDB_STRUCT_SIZE(type, field) (offsetof(type, field) + sizeof(((type*)0)->field))

#if defined(_WIN32)
#define TDB_EXPORT __declspec(dllexport)
#else
#define TDB_EXPORT __attribute__((visibility("default")))
#endif

/* Status codes (append-only). */
typedef enum tdb_status {
  TDB_OK = 0,
  TDB_UNSUPPORTED = 1,
  TDB_INVALID_ARGUMENT = 2,
  TDB_OUT_OF_MEMORY = 3,
  TDB_DEVICE_ERROR = 4,
  TDB_INTERNAL = 5
} tdb_status;

/* Element types, explicit values, append-only. An unknown dtype means "unsupported", never a crash.
 *   F32, BF16 (the high half of an f32), I32 (ids), Q8_0 (GGUF blocks of 32 values: one fp16 scale
 *   then 32 int8, 34 bytes per block; shapes count values, strides are in values). */
typedef enum tdb_dtype { TDB_F32 = 1, TDB_BF16 = 2, TDB_I32 = 3, TDB_Q8_0 = 4 } tdb_dtype;

typedef struct tdb_device tdb_device; /* opaque, plugin-owned */
typedef struct tdb_buffer tdb_buffer; /* opaque, plugin-owned: one device allocation */

/* A tensor: a typed, shaped window of a buffer. In supports() buffer is NULL (only shape and dtype
 * are known at plan time). tandem passes contiguous row-major tensors today; strides are given so
 * that a plugin can check. */
typedef struct tdb_tensor {
  size_t struct_size;
  tdb_buffer* buffer;
  uint64_t offset; /* bytes from the start of buffer */
  int32_t dtype;   /* a tdb_dtype */
  int32_t ndim;
  const int64_t* shape;   /* ndim values */
  const int64_t* strides; /* ndim values, in elements */
} tdb_tensor;

typedef enum tdb_attr_type {
  TDB_ATTR_I64 = 1,  /* integers, booleans (0/1), dtypes (a tdb_dtype) */
  TDB_ATTR_F64 = 2,  /* reals (an f32 attribute is widened exactly) */
  TDB_ATTR_I64S = 3  /* integer lists (shapes) */
} tdb_attr_type;

/* A named, typed attribute of a node. */
typedef struct tdb_attr {
  size_t struct_size;
  const char* name;
  int32_t type;  /* a tdb_attr_type */
  int32_t count; /* values in `ints` for TDB_ATTR_I64S */
  int64_t i;
  double f;
  const int64_t* ints;
} tdb_attr;

/* One node: output = op(inputs). */
typedef struct tdb_node {
  size_t struct_size;
  const char* op;      /* tandem's op name, e.g. "matmul", "gelu_grad" */
  uint32_t op_version; /* 1 for every op today */
  int32_t op_id;       /* what op_lookup returned for (op, op_version) */
  const char* name;    /* the graph node's name, for messages */
  int32_t n_inputs;
  const tdb_tensor* const* inputs;
  const tdb_tensor* output;
  int32_t n_attrs;
  const tdb_attr* const* attrs; /* sorted by name */
} tdb_node;

enum { TDB_DEVICE_DETERMINISTIC = 1 }; /* tdb_device_info.flags: same inputs, same bits */

typedef struct tdb_device_info {
  size_t struct_size;
  const char* name;   /* e.g. "Acme X1 (PCIe 0000:3b:00.0)" */
  const char* vendor;
  uint64_t mem_total, mem_free; /* bytes; 0 if unknown */
  uint32_t alignment;           /* of buffer_alloc's memory, bytes */
  uint32_t flags;               /* TDB_DEVICE_* */
} tdb_device_info;

/* What the host gives the plugin at init. */
typedef struct tdb_host {
  size_t struct_size;
  uint32_t abi_major, abi_minor; /* the host's header version */
  void (*log)(void* user, int level, const char* message); /* may be NULL; never throws */
  void* user;
} tdb_host;

/* The AdamW update (optimizer kernel, in place on param, m, v):
 *   g = grad * grad_scale; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
 *   param -= lr * (m / (1 - beta1^step) / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay * param). */
typedef struct tdb_adamw_args {
  size_t struct_size;
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  int64_t step; /* 1-based */
} tdb_adamw_args;

typedef struct tdb_backend_api {
  size_t struct_size;
  uint32_t abi_major, abi_minor; /* the plugin's header version: TDB_ABI_MAJOR, TDB_ABI_MINOR */
  const char* name;              /* short, lower case: the backend's name in tandem ("acme") */
  const char* version;           /* the plugin's own version string */

  /* Once, before anything else; options is the text after a comma in --backend (may be ""). */
  tdb_status (*init)(const tdb_host* host, const char* options);
  void (*shutdown)(void); /* optional; the host never unloads a plugin */
  /* This thread's last error message ("" if none); valid until this thread's next call. */
  const char* (*last_error)(void);

  int32_t (*device_count)(void);
  tdb_status (*device_open)(int32_t index, tdb_device** out);
  void (*device_close)(tdb_device* device);
  tdb_status (*device_info)(tdb_device* device, tdb_device_info* out); /* out->struct_size set by the host */

  /* Memory: the program's arena lives in buffers from buffer_alloc. read/write are synchronous
   * (they complete, in order after the device's earlier work, before they return). */
  tdb_status (*buffer_alloc)(tdb_device* device, uint64_t bytes, tdb_buffer** out);
  void (*buffer_free)(tdb_device* device, tdb_buffer* buffer);
  tdb_status (*buffer_write)(tdb_device* device, tdb_buffer* dst, uint64_t offset, const void* src, uint64_t bytes);
  tdb_status (*buffer_read)(tdb_device* device, const tdb_buffer* src, uint64_t offset, void* dst, uint64_t bytes);
  tdb_status (*buffer_copy)(tdb_device* device, tdb_buffer* dst, uint64_t dst_offset, const tdb_buffer* src,
                            uint64_t src_offset, uint64_t bytes);
  /* Optional (NULL: the host writes zeros with buffer_write). */
  tdb_status (*buffer_zero)(tdb_device* device, tdb_buffer* dst, uint64_t offset, uint64_t bytes);

  /* Compute. op_lookup: the plugin's id for an op, or -1 if it has no kernel for it (pure). */
  int32_t (*op_lookup)(const char* op, uint32_t op_version);
  /* Whether the plugin executes this node (dtypes, shapes, attributes): nonzero yes; 0 no, with a
   * reason written to why (at most why_len bytes, NUL-terminated). Pure and thread-safe: the host
   * asks once per node when it places a program and never asks again. */
  int32_t (*supports)(tdb_device* device, const tdb_node* node, char* why, size_t why_len);
  /* Runs a node that supports() accepted; the tensors' buffers are the plugin's. May be
   * asynchronous (in order on the device); an asynchronous failure surfaces at synchronize. */
  tdb_status (*execute)(tdb_device* device, const tdb_node* node);
  tdb_status (*synchronize)(tdb_device* device);

  /* Optimizer kernels: optional (NULL: the host runs them on the CPU, copying the tensors). All
   * f32, contiguous. sum_squares returns the sum in double. */
  tdb_status (*sum_squares)(tdb_device* device, const tdb_tensor* t, double* out);
  tdb_status (*adamw)(tdb_device* device, const tdb_tensor* param, const tdb_tensor* grad, const tdb_tensor* m,
                      const tdb_tensor* v, const tdb_adamw_args* args);
  tdb_status (*axpy)(tdb_device* device, const tdb_tensor* y, float alpha, const tdb_tensor* x); /* y += alpha x */

  /* 1.x entries: append below this line only. */
} tdb_backend_api;

/* The one exported symbol. The host passes its header version; a plugin may refuse (return NULL)
 * or adapt. The table must stay valid until the process exits. */
typedef const tdb_backend_api* (*tdb_get_api_fn)(uint32_t host_major, uint32_t host_minor);
TDB_EXPORT const tdb_backend_api* tandem_backend_get_api(uint32_t host_major, uint32_t host_minor);

#ifdef __cplusplus
}
#endif

#endif /* TANDEM_BACKEND_ABI_H */
