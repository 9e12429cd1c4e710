// safetensors files (io/safetensors.h): header length, JSON header, data offsets, dtype
// conversions; and what load() accepts, serialize() writes back and load() reads identically.
#include "fuzz_target.h"
#include "io/safetensors.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(safetensors) {
  const auto path = fuzz::write_file("model.safetensors", fuzz::as_text(data, size));
  SafetensorsFile f;
  if (!fuzz::expect_clean([&] { f = SafetensorsFile::load(path); }, path.string())) return;
  for (const auto& entry : f.tensors) {
    const std::string& name = entry.first;  // not a structured binding: lambdas below capture it
    const HostTensor& t = entry.second;
    for (int64_t d : t.shape) fuzz::require(d >= 0, "tensor " + name + " accepted with a negative dimension");
    if (t.dtype == "F32" || t.dtype == "BF16" || t.dtype == "F16") {
      fuzz::require(t.to_f32(name).size() == static_cast<size_t>(numel(t.shape)), "to_f32 size of " + name);
    } else if (t.dtype == "I32" || t.dtype == "I64") {
      fuzz::expect_clean([&] { t.to_i32(name); }, name);
    }
  }
  const auto again = fuzz::write_file("again.safetensors", f.serialize());
  SafetensorsFile g;
  fuzz::require(fuzz::expect_clean([&] { g = SafetensorsFile::load(again); }, again.string()),
                "serialize() wrote a file load() refuses");
  fuzz::require(g.metadata == f.metadata && g.tensors.size() == f.tensors.size(), "round trip changed the file");
  for (const auto& [name, t] : f.tensors) {
    const HostTensor& u = g.tensors.at(name);
    fuzz::require(u.dtype == t.dtype && u.shape == t.shape && u.bytes == t.bytes, "round trip changed tensor " + name);
  }
}
