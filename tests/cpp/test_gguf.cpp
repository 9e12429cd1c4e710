// io/gguf: what the writer writes the reader reads back exactly; a damaged file (cut at every
// length, or any header byte changed) is either read or refused with an Error naming the file,
// never a crash or an out-of-bounds read (run under ASan/UBSan in sanitizer builds).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "io/gguf.h"

namespace fs = std::filesystem;
using namespace tandem;

namespace {

fs::path write_sample(const fs::path& dir) {
  const fs::path p = dir / "sample.gguf";
  gguf::Writer w(p);
  w.add("general.architecture", gguf::Value::str("gpt2"));
  w.add("gpt2.block_count", gguf::Value::u32(3));
  w.add("gpt2.attention.layer_norm_epsilon", gguf::Value::f32(1e-5f));
  w.add("flag", gguf::Value::boolean(true));
  w.add("tokens", gguf::Value::str_array({"a", "bc", ""}));
  w.add("types", gguf::Value::i32_array({1, -3, 5}));
  w.declare("w", {2, 3}, gguf::TensorType::f32);
  w.declare("b", {5}, gguf::TensorType::f32);
  const float wv[6] = {1, 2, 3, 4, 5, 6}, bv[5] = {-1, -2, -3, -4, -5};
  w.write("w", wv, sizeof wv);
  w.write("b", bv, sizeof bv);
  w.finish();
  return p;
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

}  // namespace

TEST(Gguf, WriterReaderRoundTrip) {
  const fs::path dir = fs::temp_directory_path() / ("tandem-gguf-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const gguf::Reader r(write_sample(dir));
  EXPECT_EQ(r.get_string("general.architecture"), "gpt2");
  EXPECT_EQ(r.get_int("gpt2.block_count"), 3);
  EXPECT_FLOAT_EQ(static_cast<float>(r.get_float("gpt2.attention.layer_norm_epsilon")), 1e-5f);
  EXPECT_EQ(r.at("tokens").strings, (std::vector<std::string>{"a", "bc", ""}));
  EXPECT_EQ(r.at("types").ints, (std::vector<int64_t>{1, -3, 5}));
  EXPECT_EQ(r.tensor("w").shape, (Shape{2, 3}));
  EXPECT_EQ(r.read_f32(r.tensor("w")), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r.read_f32(r.tensor("b")), (std::vector<float>{-1, -2, -3, -4, -5}));
  EXPECT_EQ(r.tensor("b").offset % 32, 0u);
  try {
    r.get_int("missing.key");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing key 'missing.key'"), std::string::npos) << e.what();
  }
  try {
    r.get_int("general.architecture");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'general.architecture' is string"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Gguf, DamagedFilesAreReadOrRefusedNeverCrash) {
  const fs::path dir = fs::temp_directory_path() / ("tandem-gguf-dmg-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string good = read_all(write_sample(dir));
  const fs::path bad = dir / "bad.gguf";
  auto attempt = [&](const std::string& bytes) {
    std::ofstream(bad, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    try {
      const gguf::Reader r(bad);
      for (const auto& t : r.tensors()) (void)r.read_f32(t);
      return true;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
      return false;
    }
  };
  // The last tensor's 20 bytes end 12 bytes before the file does (padding to 32): every shorter cut
  // loses data and is refused; a cut inside that padding loses nothing.
  const size_t data_end = good.size() - 12;
  for (size_t n = 0; n < good.size(); ++n) EXPECT_EQ(attempt(good.substr(0, n)), n >= data_end) << "cut at " << n;
  std::mt19937 rng(7);
  const size_t header = good.size() - 64;  // the data section is the last 24 + 20 bytes, padded
  for (int i = 0; i < 1000; ++i) {
    std::string s = good;
    s[rng() % header] = static_cast<char>(rng());
    attempt(s);
  }
  fs::remove_all(dir);
}
