#include "backends/faulty/faulty_backend.h"

#include <cmath>
#include <cstring>
#include <set>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "core/graph.h"
#include "ops/matmul.h"
#include "ops/op.h"

namespace tandem {

namespace {

const char* kind_name(FaultSpec::Kind k) {
  switch (k) {
    case FaultSpec::Kind::scale: return "scale";
    case FaultSpec::Kind::bitflip: return "bitflip";
    case FaultSpec::Kind::bf16: return "bf16";
    case FaultSpec::Kind::dropgrad: return "dropgrad";
    case FaultSpec::Kind::element: return "element";
    case FaultSpec::Kind::tile: return "tile";
    case FaultSpec::Kind::stuck: return "stuck";
    case FaultSpec::Kind::bf16acc: return "bf16acc";
  }
  return "?";
}

// The keys each kind takes besides op, kind and the intermittency keys (every, p, seed).
std::set<std::string> kind_keys(FaultSpec::Kind k) {
  switch (k) {
    case FaultSpec::Kind::scale: return {"eps"};
    case FaultSpec::Kind::bitflip: return {"rate"};
    case FaultSpec::Kind::bf16: case FaultSpec::Kind::dropgrad: case FaultSpec::Kind::bf16acc: return {};
    case FaultSpec::Kind::element: return {"eps", "index"};
    case FaultSpec::Kind::tile: return {"eps", "index", "size"};
    case FaultSpec::Kind::stuck: return {"bit", "lane", "lanes", "value"};
  }
  return {};
}

size_t argmax_abs(std::span<const float> v) {
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (std::abs(v[i]) > std::abs(v[best])) best = i;
  return best;
}

}  // namespace

bool FaultSpec::is_optimizer_op(const std::string& name) {
  return name == "adamw" || name == "sum_squares" || name == "axpy";
}

FaultSpec FaultSpec::parse(const std::string& spec) {
  FaultSpec f;
  std::stringstream ss(spec);
  std::string item;
  bool have_kind = false;
  std::set<std::string> given;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    check(eq != std::string::npos, "--fault: '", item, "' is not key=value (e.g. op=softmax,kind=scale,eps=1e-3)");
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    check(given.insert(k).second, "--fault: key '", k, "' given twice");
    try {
      size_t used = 0;
      auto num = [&](auto parse) {
        auto x = parse(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
        return x;
      };
      auto integer = [&] { return num([](const std::string& s, size_t* u) { return std::stoll(s, u); }); };
      auto real = [&] { return num([](const std::string& s, size_t* u) { return std::stod(s, u); }); };
      if (k == "op") f.op = v;
      else if (k == "eps") f.eps = real();
      else if (k == "rate") f.rate = real();
      else if (k == "p") f.p = real();
      else if (k == "every") f.every = integer();
      else if (k == "index") f.index = integer();
      else if (k == "size") f.size = integer();
      else if (k == "bit") f.bit = static_cast<int>(integer());
      else if (k == "lane") f.lane = integer();
      else if (k == "lanes") f.lanes = integer();
      else if (k == "value") f.value = static_cast<int>(integer());
      else if (k == "seed") f.seed = static_cast<uint64_t>(integer());
      else if (k == "kind") {
        have_kind = true;
        if (v == "scale") f.kind = Kind::scale;
        else if (v == "bitflip") f.kind = Kind::bitflip;
        else if (v == "bf16") f.kind = Kind::bf16;
        else if (v == "dropgrad") f.kind = Kind::dropgrad;
        else if (v == "element") f.kind = Kind::element;
        else if (v == "tile") f.kind = Kind::tile;
        else if (v == "stuck") f.kind = Kind::stuck;
        else if (v == "bf16acc") f.kind = Kind::bf16acc;
        else throw Error("--fault: unknown kind '" + v + "' (scale, bitflip, bf16, dropgrad, element, tile, stuck, bf16acc)");
      } else {
        throw Error("--fault: unknown key '" + k +
                    "' (op, kind, eps, rate, index, size, bit, lane, lanes, value, every, p, seed)");
      }
    } catch (const std::invalid_argument&) {
      throw Error("--fault: '" + k + "' needs a number, got '" + v + "'");
    } catch (const std::out_of_range&) {
      throw Error("--fault: '" + k + "' is out of range: '" + v + "'");
    }
  }
  check(!f.op.empty() && have_kind, "--fault: needs op=NAME and kind=KIND, got '", spec, "'");
  bool known = is_optimizer_op(f.op);
#define TANDEM_KNOWN(name) known = known || f.op == #name;
  TANDEM_OPS(TANDEM_KNOWN)
#undef TANDEM_KNOWN
  check(known, "--fault: unknown op '", f.op, "' (a graph op, or an optimizer kernel: adamw, sum_squares, axpy)");
  const std::set<std::string> allowed = kind_keys(f.kind);
  for (const std::string& k : given)
    check(k == "op" || k == "kind" || k == "every" || k == "p" || k == "seed" || allowed.contains(k), "--fault: key '", k,
          "' does not apply to kind=", kind_name(f.kind));
  check(f.p > 0 && f.p <= 1, "--fault: p must be in (0, 1], got ", f.p);
  check(f.every >= 1, "--fault: every must be >= 1, got ", f.every);
  check(f.rate > 0 && f.rate <= 1, "--fault: rate must be in (0, 1], got ", f.rate);
  if (f.kind == Kind::scale || f.kind == Kind::element || f.kind == Kind::tile)
    check(f.eps != 0 && std::isfinite(f.eps), "--fault: eps must be finite and non-zero for kind=", kind_name(f.kind));
  check(f.index >= -1, "--fault: index must be >= 0, got ", f.index);
  check(f.size >= 1, "--fault: size must be >= 1, got ", f.size);
  if (f.kind == Kind::stuck) {
    check(given.contains("bit"), "--fault: kind=stuck needs bit=B (0-31 of the f32 pattern)");
    check(f.bit >= 0 && f.bit <= 31, "--fault: bit must be in 0..31, got ", f.bit);
    check(f.lanes >= 1 && f.lane >= 0 && f.lane < f.lanes, "--fault: lane must be in 0..lanes-1 (lanes ", f.lanes,
          "), got ", f.lane);
    check(f.value == 0 || f.value == 1, "--fault: value must be 0 or 1, got ", f.value);
  }
  check(f.kind != Kind::bf16acc || f.op == "matmul", "--fault: kind=bf16acc recomputes a matmul; it needs op=matmul, not ",
        f.op);
  check(!(f.kind == Kind::dropgrad && f.on_optimizer()), "--fault: kind=dropgrad needs a graph op with gradient nodes, not ",
        f.op);
  return f;
}

std::string FaultSpec::describe() const {
  std::ostringstream o;
  o << "op=" << op << ",kind=" << kind_name(kind);
  switch (kind) {
    case Kind::scale: o << ",eps=" << eps; break;
    case Kind::bitflip: o << ",rate=" << rate; break;
    case Kind::element: o << ",eps=" << eps << (index >= 0 ? ",index=" + std::to_string(index) : ""); break;
    case Kind::tile:
      o << ",eps=" << eps << ",size=" << size << (index >= 0 ? ",index=" + std::to_string(index) : "");
      break;
    case Kind::stuck: o << ",bit=" << bit << ",lane=" << lane << ",lanes=" << lanes << ",value=" << value; break;
    case Kind::bf16: case Kind::dropgrad: case Kind::bf16acc: break;
  }
  if (every != 1) o << ",every=" << every;
  if (p != 1) o << ",p=" << p;
  return o.str();
}

bool FaultSpec::matches(const Node& node) const {
  if (on_optimizer()) return false;
  const std::string name = op_name(node.op);
  if (kind == Kind::dropgrad)
    return name.starts_with(op + "_grad") || (name == op && node.name.find(".bwd.") != std::string::npos);
  return name == op;
}

FaultyBackend::FaultyBackend(std::unique_ptr<Backend> inner, FaultSpec spec)
    : inner_(std::move(inner)), spec_(std::move(spec)), rng_(spec_.seed) {}

bool FaultyBackend::supports(const Node& node) const {
  if (spec_.matches(node)) seen_ = true;
  return inner_->supports(node);
}

bool FaultyBackend::supports_node(const Node& node, std::span<const Node* const> inputs) const {
  const bool ok = inner_->supports_node(node, inputs);
  // A node the inner backend hands to its fallback never meets the fault.
  if (ok && spec_.matches(node)) seen_ = true;
  return ok;
}

bool FaultyBackend::fires() {
  ++executions_;
  if (executions_ % spec_.every != 0) return false;
  if (spec_.p < 1 && !std::bernoulli_distribution(spec_.p)(rng_)) return false;
  ++injected_;
  return true;
}

void FaultyBackend::perturb(std::span<float> v) {
  if (v.empty()) return;
  const auto n = static_cast<int64_t>(v.size());
  const auto factor = static_cast<float>(1.0 + spec_.eps);
  switch (spec_.kind) {
    case FaultSpec::Kind::scale:
      for (float& x : v) x *= factor;
      break;
    case FaultSpec::Kind::bf16:
      for (float& x : v) {
        uint32_t u;
        std::memcpy(&u, &x, 4);
        u &= 0xffff0000u;
        std::memcpy(&x, &u, 4);
      }
      break;
    case FaultSpec::Kind::bitflip: {
      std::bernoulli_distribution hit(spec_.rate);
      std::uniform_int_distribution<int> bit(16, 31);
      bool any = false;
      auto flip = [&](float& x) {
        uint32_t u;
        std::memcpy(&u, &x, 4);
        u ^= 1u << bit(rng_);
        std::memcpy(&x, &u, 4);
        any = true;
      };
      for (float& x : v)
        if (hit(rng_)) flip(x);
      if (!any) flip(v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng_)]);
      break;
    }
    case FaultSpec::Kind::element: {
      const size_t i = spec_.index >= 0 ? static_cast<size_t>(spec_.index % n) : argmax_abs(v);
      v[i] *= factor;
      break;
    }
    case FaultSpec::Kind::tile: {
      const int64_t start =
          spec_.index >= 0 ? spec_.index % n : static_cast<int64_t>(argmax_abs(v)) / spec_.size * spec_.size;
      for (int64_t i = start; i < std::min(n, start + spec_.size); ++i) v[static_cast<size_t>(i)] *= factor;
      break;
    }
    case FaultSpec::Kind::stuck: {
      const uint32_t mask = 1u << spec_.bit;
      for (int64_t i = spec_.lane; i < n; i += spec_.lanes) {
        uint32_t u;
        std::memcpy(&u, &v[static_cast<size_t>(i)], 4);
        u = spec_.value ? (u | mask) : (u & ~mask);
        std::memcpy(&v[static_cast<size_t>(i)], &u, 4);
      }
      break;
    }
    case FaultSpec::Kind::dropgrad: case FaultSpec::Kind::bf16acc: break;
  }
}

namespace {
std::vector<float> download_floats(Backend& be, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (t.dtype == DType::f32) {
    be.download(v.data(), t.storage->handle, t.offset, t.nbytes());
  } else if (t.dtype == DType::q8_0) {  // a q8_0 weight: its dequantized values
    std::vector<uint8_t> q(t.nbytes());
    be.download(q.data(), t.storage->handle, t.offset, t.nbytes());
    dequantize_q8_0(q.data(), v.data(), t.numel());
  } else {
    std::vector<uint16_t> h(v.size());
    be.download(h.data(), t.storage->handle, t.offset, t.nbytes());
    bf16_to_f32(h.data(), v.data(), v.size());
  }
  return v;
}
void upload_floats(Backend& be, const Tensor& t, const std::vector<float>& v) {
  if (t.dtype == DType::f32) return be.upload(t.storage->handle, t.offset, v.data(), t.nbytes());
  std::vector<uint16_t> h(v.size());
  f32_to_bf16(v.data(), h.data(), v.size());
  be.upload(t.storage->handle, t.offset, h.data(), t.nbytes());
}

// op(A) . op(B) with the running sum of every element rounded to bf16 after each multiply-add.
std::vector<float> bf16_accumulated_matmul(const Node& node, const std::vector<float>& A, const std::vector<float>& B,
                                           const Shape& a_shape, const Shape& b_shape) {
  const MatmulDims d = matmul_dims(node, a_shape, b_shape);
  std::vector<float> C(static_cast<size_t>(d.batch * d.m * d.n));
  for (int64_t p = 0; p < d.batch; ++p) {
    const float* a = A.data() + p * d.a_rows * d.a_cols;
    const float* b = B.data() + (d.batched ? p * d.b_rows * d.b_cols : 0);
    for (int64_t i = 0; i < d.m; ++i)
      for (int64_t j = 0; j < d.n; ++j) {
        float acc = 0.0f;
        for (int64_t k = 0; k < d.k; ++k) {
          const float av = d.trans_a ? a[k * d.a_cols + i] : a[i * d.a_cols + k];
          const float bv = d.trans_b ? b[j * d.b_cols + k] : b[k * d.b_cols + j];
          acc = round_bf16(acc + av * bv);
        }
        C[static_cast<size_t>((p * d.m + i) * d.n + j)] = acc;
      }
  }
  return C;
}
}  // namespace

void FaultyBackend::perturb_tensor(const Tensor& t, const std::string& what) {
  check(is_float(t.dtype), "faulty backend: fault kinds act on float outputs, ", what, " is ", dtype_name(t.dtype));
  std::vector<float> v = download_floats(*inner_, t);
  perturb(v);
  upload_floats(*inner_, t, v);
}

void FaultyBackend::execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) {
  inner_->execute(node, inputs, output);
  if (!spec_.matches(node)) return;
  seen_ = true;
  if (!fires()) return;
  if (spec_.kind == FaultSpec::Kind::dropgrad) {
    inner_->zero(output.storage->handle, output.offset, output.nbytes());
    return;
  }
  if (spec_.kind == FaultSpec::Kind::bf16acc) {
    inner_->sync();
    upload_floats(*inner_, output,
                  bf16_accumulated_matmul(node, download_floats(*inner_, inputs[0]), download_floats(*inner_, inputs[1]),
                                          inputs[0].shape, inputs[1].shape));
    return;
  }
  perturb_tensor(output, "node '" + node.name + "'");
}

// A graph-op fault whose op no node of the run uses would rehearse nothing; an optimizer step comes
// after a whole forward and backward pass, so by then the op must have been placed or run.
void FaultyBackend::check_used_before_optimizer(const char* kernel) {
  if (optimizer_checked_) return;
  optimizer_checked_ = true;
  check(spec_.on_optimizer() || used(), "--fault: op '", spec_.op, "' is used by no node of this run (", name(),
        " reached the optimizer kernel ", kernel, " without running it)");
}

double FaultyBackend::sum_squares(const Tensor& t) {
  check_used_before_optimizer("sum_squares");
  const double r = inner_->sum_squares(t);
  if (spec_.op != "sum_squares" || !fires()) return r;
  float f = static_cast<float>(r);
  perturb(std::span<float>(&f, 1));
  return f;
}

void FaultyBackend::adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) {
  check_used_before_optimizer("adamw");
  inner_->adamw(p, g, m, v, s);
  if (spec_.op == "adamw" && fires()) perturb_tensor(p, "adamw's parameter");
}

void FaultyBackend::axpy(const Tensor& y, float alpha, const Tensor& x) {
  check_used_before_optimizer("axpy");
  inner_->axpy(y, alpha, x);
  if (spec_.op == "axpy" && fires()) perturb_tensor(y, "axpy's y");
}

}  // namespace tandem
