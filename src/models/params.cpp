#include "models/params.h"

#include <random>

#include "core/error.h"

namespace tandem {

ParamStore ParamStore::init(const Model& model, Backend& backend, uint64_t seed) {
  ParamStore s;
  s.specs = model.param_specs();
  std::mt19937_64 rng(seed);
  for (const auto& spec : s.specs) {
    std::vector<float> host(static_cast<size_t>(numel(spec.shape)));
    switch (spec.init) {
      case ParamSpec::Init::zeros: std::fill(host.begin(), host.end(), 0.0f); break;
      case ParamSpec::Init::ones: std::fill(host.begin(), host.end(), 1.0f); break;
      case ParamSpec::Init::normal: {
        std::normal_distribution<float> d(0.0f, spec.std);
        for (auto& v : host) v = d(rng);
        break;
      }
    }
    s.tensors.push_back(Tensor::from_host(backend, spec.shape, host));
  }
  return s;
}

ParamStore ParamStore::load(const Model& model, Backend& backend, const std::filesystem::path& file) {
  return load(model, backend, SafetensorsFile::load(file), file);
}

DType ParamStore::stored_matrix_dtype(const SafetensorsFile& st) {
  bool any = false, all_bf16 = true;
  for (const auto& [name, t] : st.tensors)
    if (t.shape.size() >= 2 && (t.dtype == "F32" || t.dtype == "BF16" || t.dtype == "F16")) {
      any = true;
      all_bf16 = all_bf16 && t.dtype == "BF16";
    }
  return any && all_bf16 ? DType::bf16 : DType::f32;
}

ParamStore ParamStore::load(const Model& model, Backend& backend, SafetensorsFile st, const std::filesystem::path& file) {
  model.from_checkpoint_layout(st.tensors);
  std::map<std::string, const HostTensor*> found;
  for (const auto& [name, t] : st.tensors) {
    std::string canon = model.canonical_name(name);
    if (!canon.empty()) found[canon] = &t;
  }
  ParamStore s;
  s.specs = model.param_specs();
  std::set<std::string> known;
  for (const auto& spec : s.specs) {
    known.insert(spec.name);
    auto it = found.find(spec.name);
    check(it != found.end(), file.string(), ": missing tensor '", spec.name, "'");
    check(it->second->shape == spec.shape, file.string(), ": tensor '", spec.name, "' has shape ",
          shape_str(it->second->shape), ", the model's config needs ", shape_str(spec.shape));
    s.tensors.push_back(
        Tensor::from_host(backend, spec.shape, it->second->to_f32(file.string() + ": " + spec.name), model.param_dtype(spec)));
  }
  for (const auto& [name, t] : found)
    check(known.contains(name), file.string(), ": unexpected tensor '", name, "' for a ", model.type(), " model");
  return s;
}

SafetensorsFile ParamStore::to_safetensors(const Model& model) const {
  SafetensorsFile f;
  for (size_t i = 0; i < specs.size(); ++i) f.tensors[specs[i].name] = HostTensor::f32(specs[i].shape, tensors[i].to_host());
  model.to_checkpoint_layout(f.tensors);
  f.metadata["format"] = "pt";
  return f;
}

void ParamStore::bind(Program& program, const ModelNodes& nodes) const {
  for (size_t i = 0; i < specs.size(); ++i) program.bind(nodes.params.at(specs[i].name), tensors[i]);
}

std::vector<Tensor> ParamStore::zeros_like(Backend& backend) const {
  std::vector<Tensor> out;
  for (const auto& spec : specs) out.push_back(Tensor::zeros(backend, spec.shape, DType::f32));
  return out;
}

int64_t ParamStore::count() const {
  int64_t n = 0;
  for (const auto& spec : specs) n += numel(spec.shape);
  return n;
}

}  // namespace tandem
