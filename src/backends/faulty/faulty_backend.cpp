#include "backends/faulty/faulty_backend.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "core/graph.h"
#include "ops/op.h"

namespace tandem {

FaultSpec FaultSpec::parse(const std::string& spec) {
  FaultSpec f;
  std::stringstream ss(spec);
  std::string item;
  bool have_kind = false;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    check(eq != std::string::npos, "--fault: '", item, "' is not key=value (e.g. op=softmax,kind=scale,eps=1e-3)");
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    try {
      if (k == "op") f.op = v;
      else if (k == "eps") f.eps = std::stod(v);
      else if (k == "p") f.p = std::stod(v);
      else if (k == "seed") f.seed = std::stoull(v);
      else if (k == "kind") {
        have_kind = true;
        if (v == "scale") f.kind = Kind::scale;
        else if (v == "bitflip") f.kind = Kind::bitflip;
        else if (v == "bf16") f.kind = Kind::bf16;
        else if (v == "dropgrad") f.kind = Kind::dropgrad;
        else throw Error("--fault: unknown kind '" + v + "' (scale, bitflip, bf16, dropgrad)");
      } else {
        throw Error("--fault: unknown key '" + k + "' (op, kind, eps, p, seed)");
      }
    } catch (const std::invalid_argument&) {
      throw Error("--fault: '" + k + "' needs a number, got '" + v + "'");
    }
  }
  check(!f.op.empty() && have_kind, "--fault: needs op=NAME and kind=KIND, got '", spec, "'");
  bool known = false;
#define TANDEM_KNOWN(name) known = known || f.op == #name;
  TANDEM_OPS(TANDEM_KNOWN)
#undef TANDEM_KNOWN
  check(known, "--fault: unknown op '", f.op, "'");
  check(f.p > 0 && f.p <= 1, "--fault: p must be in (0, 1]");
  return f;
}

bool FaultSpec::matches(const Node& node) const {
  const std::string name = op_name(node.op);
  if (kind == Kind::dropgrad)
    return name.starts_with(op + "_grad") || (name == op && node.name.find(".bwd.") != std::string::npos);
  return name == op;
}

FaultyBackend::FaultyBackend(std::unique_ptr<Backend> inner, FaultSpec spec)
    : inner_(std::move(inner)), spec_(std::move(spec)), rng_(spec_.seed) {}

void FaultyBackend::execute(const Node& node, std::span<const Tensor> inputs, const Tensor& output) {
  inner_->execute(node, inputs, output);
  if (!spec_.matches(node)) return;
  if (spec_.kind == FaultSpec::Kind::dropgrad) {
    inner_->zero(output.storage->handle, output.offset, output.nbytes());
    return;
  }
  check(output.dtype == DType::f32, "faulty backend: fault kinds act on f32 outputs, node '", node.name, "' is ",
        dtype_name(output.dtype));
  std::vector<float> v(static_cast<size_t>(output.numel()));
  inner_->download(v.data(), output.storage->handle, output.offset, output.nbytes());
  switch (spec_.kind) {
    case FaultSpec::Kind::scale:
      for (float& x : v) x *= static_cast<float>(1.0 + spec_.eps);
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
      std::bernoulli_distribution hit(spec_.p);
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
      if (!any && !v.empty()) flip(v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng_)]);
      break;
    }
    case FaultSpec::Kind::dropgrad: break;
  }
  inner_->upload(output.storage->handle, output.offset, v.data(), output.nbytes());
}

}  // namespace tandem
