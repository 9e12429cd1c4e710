// bf16 on the device backends (OpenCL here through PoCL; CUDA where a GPU is present):
//  - the cast kernel implements core/dtype.h's rule bit for bit: f32 -> bf16 over every bf16 value
//    with each interesting low half (ties to even and odd, just above and below a tie, NaN payloads,
//    +-inf, subnormals, the overflow boundary) and a random sweep of f32 bit patterns; bf16 -> f32
//    over all 65,536 bf16 values; the bits travel as integers on the host, so nothing is flushed.
//  - every other op on bf16 storage is "the backend's own f32 kernel on the bf16 values, rounded
//    once": its bf16 output equals, bit for bit, f32_to_bf16 of the same node run in f32 on f32
//    copies of the same values (element-wise, a broadcast add, a row reduction, a GEMM, and an
//    index-producing op fed bf16 scores).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backends/registry.h"
#include "core/backend.h"
#include "core/dtype.h"
#include "core/graph.h"

namespace tandem {
namespace {

std::vector<std::string> device_backends() {
  std::vector<std::string> out;
  for (const auto& b : list_backends())
    if ((b.name == "opencl" || b.name == "cuda") && !b.devices.empty() &&
        b.devices.front().find("unusable") == std::string::npos)
      out.push_back(b.name);
  return out;
}

Tensor upload_bits(Backend& be, const Shape& shape, DType dt, const void* bits) {
  Tensor t = Tensor::empty(be, shape, dt);
  be.upload(t.storage->handle, t.offset, bits, t.nbytes());
  return t;
}
template <typename T>
std::vector<T> download_bits(Backend& be, const Tensor& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  be.sync();
  be.download(v.data(), t.storage->handle, t.offset, t.nbytes());
  return v;
}

std::vector<uint32_t> cast_inputs() {
  std::vector<uint32_t> v;
  for (uint32_t h = 0; h < 0x10000; ++h)
    for (uint32_t low : {0x0000u, 0x0001u, 0x3fffu, 0x7fffu, 0x8000u, 0x8001u, 0xc000u, 0xffffu}) v.push_back(h << 16 | low);
  std::mt19937 rng(7);
  for (int i = 0; i < (1 << 20); ++i) v.push_back(static_cast<uint32_t>(rng()));
  return v;
}

TEST(DeviceBf16, CastIsTheRuleOfDtypeH) {
  const auto names = device_backends();
  if (names.empty()) GTEST_SKIP() << "no OpenCL or CUDA device";
  const std::vector<uint32_t> f32 = cast_inputs();
  std::vector<uint16_t> all(0x10000);
  for (uint32_t h = 0; h < 0x10000; ++h) all[h] = static_cast<uint16_t>(h);
  for (const std::string& name : names) {
    auto be = make_backend(name);
    Graph g;
    const int64_t n = static_cast<int64_t>(f32.size());
    NodeId x = g.input("x", {n}, DType::f32);
    NodeId down = g.add(OpKind::cast, {x}, CastAttrs{DType::bf16}, "down");
    NodeId h = g.input("h", {0x10000}, DType::bf16);
    NodeId up = g.add(OpKind::cast, {h}, CastAttrs{DType::f32}, "up");
    ASSERT_TRUE(be->supports(g.node(down)) && be->supports(g.node(up))) << name;

    const Tensor xt = upload_bits(*be, {n}, DType::f32, f32.data());
    const Tensor dt = Tensor::empty(*be, {n}, DType::bf16);
    be->execute(g.node(down), std::vector<Tensor>{xt}, dt);
    const auto got = download_bits<uint16_t>(*be, dt);
    size_t bad = 0;
    for (size_t i = 0; i < f32.size(); ++i) {
      float f;
      std::memcpy(&f, &f32[i], 4);
      if (got[i] != f32_to_bf16(f) && bad++ < 5)
        ADD_FAILURE() << name << ": f32 0x" << std::hex << f32[i] << " -> 0x" << got[i] << ", the rule says 0x"
                      << f32_to_bf16(f);
    }
    EXPECT_EQ(bad, 0u) << name << ": f32 -> bf16 mismatches";

    const Tensor ht = upload_bits(*be, {0x10000}, DType::bf16, all.data());
    const Tensor ut = Tensor::empty(*be, {0x10000}, DType::f32);
    be->execute(g.node(up), std::vector<Tensor>{ht}, ut);
    const auto wide = download_bits<uint32_t>(*be, ut);
    for (uint32_t i = 0; i < 0x10000; ++i) ASSERT_EQ(wide[i], i << 16) << name << ": bf16 0x" << std::hex << i;
  }
}

// Random bf16 values as bits, in [-2, 2] away from the subnormal range (FTZ/DAZ never matters).
std::vector<uint16_t> random_bf16(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (auto& h : v) h = f32_to_bf16(u(rng));
  return v;
}

// Runs `node_id` of g with every float input in `dt` (the same bf16 values either way).
std::vector<uint32_t> run_as(Backend& be, Graph& g, NodeId node_id, DType dt, const std::vector<std::vector<uint16_t>>& vals,
                             const std::vector<std::vector<int32_t>>& ids) {
  Node node = g.node(node_id);
  if (node.dtype != DType::i32) node.dtype = dt;
  std::vector<Tensor> ins;
  size_t fi = 0, ii = 0;
  for (NodeId id : node.inputs) {
    const Node& in = g.node(id);
    if (in.dtype == DType::i32) {
      ins.push_back(upload_bits(be, in.shape, DType::i32, ids.at(ii++).data()));
      continue;
    }
    const auto& h = vals.at(fi++);
    if (dt == DType::bf16) {
      ins.push_back(upload_bits(be, in.shape, DType::bf16, h.data()));
    } else {
      std::vector<uint32_t> w(h.size());
      for (size_t i = 0; i < h.size(); ++i) w[i] = static_cast<uint32_t>(h[i]) << 16;
      ins.push_back(upload_bits(be, in.shape, DType::f32, w.data()));
    }
  }
  Tensor out = Tensor::empty(be, node.shape, node.dtype);
  be.execute(node, ins, out);
  if (node.dtype != DType::bf16) return download_bits<uint32_t>(be, out);
  const auto h = download_bits<uint16_t>(be, out);
  return {h.begin(), h.end()};
}

TEST(DeviceBf16, EveryOpIsItsF32KernelRoundedOnce) {
  const auto names = device_backends();
  if (names.empty()) GTEST_SKIP() << "no OpenCL or CUDA device";
  for (const std::string& name : names) {
    auto be = make_backend(name);
    Graph g;
    const NodeId a = g.input("a", {37, 64}, DType::bf16), b = g.input("b", {64}, DType::bf16);
    const NodeId w = g.input("w", {64, 48}, DType::bf16), s = g.input("s", {37, 8}, DType::bf16);
    struct Case {
      NodeId node;
      std::vector<std::vector<uint16_t>> vals;
      std::vector<std::vector<int32_t>> ids;
    };
    const auto A = random_bf16(37 * 64, 1), B = random_bf16(64, 2), W = random_bf16(64 * 48, 3), S = random_bf16(37 * 8, 4);
    const std::vector<Case> cases = {
        {g.add(OpKind::gelu, {a}, NoAttrs{}, "gelu"), {A}, {}},
        {g.add(OpKind::add, {a, b}, NoAttrs{}, "add_bcast"), {A, B}, {}},
        {g.add(OpKind::softmax, {a}, NoAttrs{}, "softmax"), {A}, {}},
        {g.add(OpKind::sum, {a}, NoAttrs{}, "sum"), {A}, {}},
        {g.add(OpKind::matmul, {a, w}, MatmulAttrs{}, "matmul"), {A, W}, {}},
        {g.add(OpKind::layernorm, {a, b, b}, NormAttrs{1e-5f}, "layernorm"), {A, B, B}, {}},
        {g.add(OpKind::topk_route, {s, g.input("bias", {8}, DType::bf16)}, RouteAttrs{8, 2, 2, 1, true, 1.0f}, "route"),
         {S, random_bf16(8, 5)}, {}},
    };
    for (const Case& c : cases) {
      const Node& n = g.node(c.node);
      SCOPED_TRACE(name + " " + n.name);
      ASSERT_TRUE(be->supports(n));
      const auto wide = run_as(*be, g, c.node, DType::f32, c.vals, c.ids);
      const auto half = run_as(*be, g, c.node, DType::bf16, c.vals, c.ids);
      ASSERT_EQ(wide.size(), half.size());
      size_t bad = 0;
      for (size_t i = 0; i < wide.size(); ++i) {
        float f;
        std::memcpy(&f, &wide[i], 4);
        const uint32_t want = n.dtype == DType::i32 ? wide[i] : f32_to_bf16(f);
        if (half[i] != want && bad++ < 3) ADD_FAILURE() << "element " << i << ": 0x" << std::hex << half[i] << " want 0x" << want;
      }
      EXPECT_EQ(bad, 0u);
    }
  }
}

TEST(DeviceBf16, MixedFloatInputsAreAnErrorNamingTheNode) {
  const auto names = device_backends();
  if (names.empty()) GTEST_SKIP() << "no OpenCL or CUDA device";
  for (const std::string& name : names) {
    auto be = make_backend(name);
    Graph g;
    const NodeId a = g.input("a", {4}, DType::bf16), b = g.input("b", {4}, DType::bf16);
    const Node& add = g.node(g.add(OpKind::add, {a, b}, NoAttrs{}, "the_add"));
    const Tensor x = Tensor::zeros(*be, {4}, DType::bf16), y = Tensor::zeros(*be, {4}, DType::f32);
    const Tensor out = Tensor::empty(*be, {4}, DType::bf16);
    try {
      be->execute(add, std::vector<Tensor>{x, y}, out);
      ADD_FAILURE() << name << ": an f32 input to a bf16 add was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("the_add"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace tandem
