#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unistd.h>

#include "core/error.h"
#include "data/batch_loader.h"
#include "data/shard.h"

namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() /
           ("tandem_shard_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tandem::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<int32_t> ramp(size_t n, int32_t mod) {
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int32_t>((i * 7919) % mod);
  return v;
}

}  // namespace

TEST(Shard, RoundTripsUint16AndUint32) {
  TempDir dir;
  for (uint32_t vocab : {65u, 65536u, 70000u}) {
    const auto tokens = ramp(1000, static_cast<int32_t>(vocab));
    const fs::path file = dir.path / ("s" + std::to_string(vocab) + ".bin");
    tandem::write_shard(file, tokens, vocab);
    const size_t width = vocab <= 65536 ? 2 : 4;
    EXPECT_EQ(fs::file_size(file), 64 + 1000 * width);
    const std::string bytes = read_file(file);
    EXPECT_EQ(bytes.substr(0, 8), "TANDEMTK");
    const auto shard = tandem::read_shard(file);
    EXPECT_EQ(shard.tokens, tokens);
    EXPECT_EQ(shard.vocab_size, vocab);
    EXPECT_EQ(shard.path, file);
  }
  // Only the final files remain: the temporary ones were renamed into place.
  for (const auto& entry : fs::directory_iterator(dir.path))
    EXPECT_EQ(entry.path().extension(), ".bin") << entry.path();
}

TEST(Shard, DetectsCorruption) {
  TempDir dir;
  const fs::path file = dir.path / "train.bin";
  tandem::write_shard(file, ramp(100, 50), 50);
  const std::string good = read_file(file);

  write_file(file, good.substr(0, good.size() - 3));
  std::string msg = error_of([&] { tandem::read_shard(file); });
  EXPECT_NE(msg.find(file.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 264 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got 261"), std::string::npos) << msg;

  write_file(file, good.substr(0, 10));
  EXPECT_NE(error_of([&] { tandem::read_shard(file); }).find("truncated"), std::string::npos);

  std::string flipped = good;
  flipped[64 + 37] ^= 0x04;
  write_file(file, flipped);
  msg = error_of([&] { tandem::read_shard(file); });
  EXPECT_NE(msg.find("checksum mismatch: expected"), std::string::npos) << msg;

  std::string magic = good;
  magic[0] = 'X';
  write_file(file, magic);
  EXPECT_NE(error_of([&] { tandem::read_shard(file); }).find("bad magic"), std::string::npos);

  std::string version = good;
  version[8] = 7;
  write_file(file, version);
  EXPECT_NE(error_of([&] { tandem::read_shard(file); }).find("version 7"), std::string::npos);

  std::string dtype = good;
  dtype[12] = 9;
  write_file(file, dtype);
  EXPECT_NE(error_of([&] { tandem::read_shard(file); }).find("dtype code 9"), std::string::npos);

  EXPECT_NE(error_of([&] { tandem::read_shard(dir.path / "missing.bin"); }).find("missing.bin"), std::string::npos);
}

TEST(Shard, WriteRejectsTokensOutsideVocab) {
  TempDir dir;
  const std::vector<int32_t> tokens = {1, 2, 50};
  EXPECT_NE(error_of([&] { tandem::write_shard(dir.path / "x.bin", tokens, 50); }).find("token 50 at index 2"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir.path / "x.bin"));
}

TEST(BatchLoader, TargetsAreInputsShiftedByOne) {
  tandem::TokenShard shard{ramp(5000, 1 << 20), 1 << 20, "mem"};
  for (size_t i = 0; i < shard.tokens.size(); ++i) shard.tokens[i] = static_cast<int32_t>(i);  // token == offset
  tandem::BatchLoader loader(shard, 4, 16, 42);
  std::vector<int32_t> x(64), y(64);
  for (int step = 0; step < 50; ++step) {
    loader.next(x.data(), y.data());
    for (int r = 0; r < 4; ++r)
      for (int t = 0; t < 16; ++t) {
        EXPECT_EQ(y[r * 16 + t], x[r * 16 + t] + 1);
        if (t) {
          EXPECT_EQ(x[r * 16 + t], x[r * 16 + t - 1] + 1);
        }
      }
    for (int r = 0; r < 4; ++r) EXPECT_LE(x[r * 16] + 16, 4999);  // the last target is in range
  }
  EXPECT_EQ(loader.position(), 50u);
}

TEST(BatchLoader, DeterministicAndSeekable) {
  const tandem::TokenShard shard{ramp(10000, 1000), 1000, "mem"};
  tandem::BatchLoader a(shard, 3, 8, 7), b(shard, 3, 8, 7), other_seed(shard, 3, 8, 8);
  std::vector<std::vector<int32_t>> xs;
  std::vector<int32_t> x(24), y(24), x2(24), y2(24);
  for (int k = 0; k < 10; ++k) {
    a.next(x.data(), y.data());
    b.next(x2.data(), y2.data());
    EXPECT_EQ(x, x2);
    EXPECT_EQ(y, y2);
    xs.push_back(x);
  }
  other_seed.next(x2.data(), y2.data());
  EXPECT_NE(xs[0], x2);
  // Seeking to batch k reproduces batch k exactly, from any position.
  b.seek(6);
  EXPECT_EQ(b.position(), 6u);
  b.next(x2.data(), y2.data());
  EXPECT_EQ(x2, xs[6]);
  b.seek(2);
  b.next(x2.data(), y2.data());
  EXPECT_EQ(x2, xs[2]);
}

TEST(BatchLoader, OffsetsCoverTheWholeRange) {
  // With 3 possible start offsets, all of them must show up (including the last, 2).
  const tandem::TokenShard shard{ramp(10, 10), 10, "mem"};
  tandem::BatchLoader loader(shard, 1, 7, 1);
  std::set<uint64_t> seen;
  for (uint64_t k = 0; k < 200; ++k) seen.insert(loader.offset(k, 0));
  EXPECT_EQ(seen, (std::set<uint64_t>{0, 1, 2}));
}

TEST(BatchLoader, RejectsShardShorterThanOneBlock) {
  const tandem::TokenShard shard{ramp(16, 10), 10, "data/val.bin"};
  const std::string msg = error_of([&] { tandem::BatchLoader(shard, 2, 16, 0); });
  EXPECT_NE(msg.find("data/val.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at least 17"), std::string::npos) << msg;
  EXPECT_NO_THROW(tandem::BatchLoader(shard, 2, 15, 0));
}
