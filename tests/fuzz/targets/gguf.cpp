// GGUF files (io/gguf.h Reader): header, key/values, tensor infos, then every tensor's data read
// and converted as import does.
#include "fuzz_target.h"
#include "io/gguf.h"

using namespace tandem;

TANDEM_FUZZ_TARGET(gguf) {
  const auto path = fuzz::write_file("model.gguf", fuzz::as_text(data, size));
  fuzz::expect_clean(
      [&] {
        const gguf::Reader r(path);
        for (const auto& t : r.tensors()) r.read_f32(t);
      },
      path.string());
}
