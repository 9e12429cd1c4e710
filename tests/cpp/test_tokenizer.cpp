#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "core/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using tandem::Tokenizer;

namespace {

// A fresh directory per test, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() /
           ("tandem_tok_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
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

// The repository's data/ folder, found from this source file's location.
fs::path repo_root() { return fs::path(__FILE__).parent_path().parent_path().parent_path(); }

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tandem::Error& e) {
    return e.what();
  }
  return "(no error)";
}

const std::string kSample = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll: Speak, speak! — naïve 日本 😀\r\n";

}  // namespace

TEST(CharTokenizer, IdsFollowCodepointOrderAndRoundTrip) {
  const Tokenizer tok = Tokenizer::train_char("cab\nb");
  EXPECT_EQ(tok.vocab_size(), 4);
  EXPECT_EQ(tok.encode("abc\n"), (std::vector<int32_t>{1, 2, 3, 0}));
  const Tokenizer uni = Tokenizer::train_char(kSample);
  const auto ids = uni.encode(kSample);
  EXPECT_EQ(uni.decode(ids), kSample);
  EXPECT_FALSE(uni.bos_id().has_value());
  EXPECT_FALSE(uni.eos_id().has_value());
}

TEST(CharTokenizer, UnknownCharacterNamesCharAndOffset) {
  const Tokenizer tok = Tokenizer::train_char("abc");
  const std::string msg = error_of([&] { tok.encode("abé"); });
  EXPECT_NE(msg.find("'é' (U+00E9)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte offset 2"), std::string::npos) << msg;
}

TEST(CharTokenizer, InvalidUtf8IsRejected) {
  EXPECT_NE(error_of([] { Tokenizer::train_char("ab\xff"); }).find("invalid UTF-8 at byte offset 2"), std::string::npos);
  const Tokenizer tok = Tokenizer::train_char("abc");
  EXPECT_NE(error_of([&] { tok.encode("a\xc3"); }).find("byte offset 1"), std::string::npos);
}

TEST(CharTokenizer, DecodeRejectsOutOfRangeId) {
  const Tokenizer tok = Tokenizer::train_char("abc");
  const std::vector<int32_t> ids = {0, 3};
  EXPECT_NE(error_of([&] { tok.decode(ids); }).find("token id 3"), std::string::npos);
  const std::vector<int32_t> neg = {-1};
  EXPECT_NE(error_of([&] { tok.decode(neg); }).find("token id -1"), std::string::npos);
}

TEST(CharTokenizer, SaveLoadRoundTrip) {
  TempDir dir;
  const Tokenizer tok = Tokenizer::train_char(kSample);
  tok.save(dir.path / "tokenizer.json");
  const Tokenizer back = Tokenizer::load(dir.path);  // a directory works too
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  EXPECT_EQ(back.encode(kSample), tok.encode(kSample));
  EXPECT_EQ(back.decode(back.encode(kSample)), kSample);
}

TEST(BpeTokenizer, TrainsToVocabSizeAndRoundTrips) {
  std::string text;
  for (int i = 0; i < 50; ++i) text += kSample;
  const Tokenizer tok = Tokenizer::train_bpe(text, 300);
  EXPECT_EQ(tok.vocab_size(), 300);
  const auto ids = tok.encode(text);
  EXPECT_LT(ids.size(), text.size() / 2);  // merges were learned and applied
  EXPECT_EQ(tok.decode(ids), text);
  // Bytes never seen in training still encode: every byte has a token.
  const std::string unseen = "Zebra ∑ \t\x01 ok";
  EXPECT_EQ(tok.decode(tok.encode(unseen)), unseen);
  const std::vector<int32_t> bad = {300};
  EXPECT_NE(error_of([&] { tok.decode(bad); }).find("token id 300"), std::string::npos);
}

TEST(BpeTokenizer, FrequentWordBecomesOneToken) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += " hello";
  // " hello" takes 5 merges; training then runs out of pairs and stops below the requested size.
  const Tokenizer tok = Tokenizer::train_bpe(text, 300);
  EXPECT_EQ(tok.vocab_size(), 261);
  EXPECT_EQ(tok.encode(" hello hello").size(), 2u);
}

TEST(BpeTokenizer, TrainingIsDeterministicAndSaveLoadKeepsIds) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 20; ++i) text += kSample;
  const Tokenizer a = Tokenizer::train_bpe(text, 320);
  const Tokenizer b = Tokenizer::train_bpe(text, 320);
  a.save(dir.path / "a.json");
  b.save(dir.path / "b.json");
  EXPECT_EQ(read_file(dir.path / "a.json"), read_file(dir.path / "b.json"));
  const Tokenizer back = Tokenizer::load(dir.path / "a.json");
  EXPECT_EQ(back.encode(text), a.encode(text));
  EXPECT_EQ(back.vocab_size(), 320);
}

TEST(BpeTokenizer, RejectsTooSmallVocab) {
  EXPECT_THROW(Tokenizer::train_bpe("abc", 256), tandem::Error);
}

TEST(BpeTokenizer, ShakespeareCorpusRoundTrips) {
  const std::string corpus = read_file(repo_root() / "data" / "tinyshakespeare.txt");
  ASSERT_GT(corpus.size(), 1000000u);
  const Tokenizer tok = Tokenizer::train_bpe(corpus, 1024);
  EXPECT_EQ(tok.vocab_size(), 1024);
  const auto ids = tok.encode(corpus);
  EXPECT_LT(ids.size(), corpus.size() / 2);
  EXPECT_EQ(tok.decode(ids), corpus);
}

namespace {

// A hand-written byte-level BPE file: all 256 byte tokens, two merges, an added special token.
std::string tiny_bpe_json(const std::string& merges, const std::string& extra = "") {
  // GPT-2's byte-to-unicode spelling of byte b.
  auto spell = [](int b) -> std::string {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = b;
    if (!printable) {
      cp = 256;
      for (int x = 0; x < b; ++x)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) ++cp;
    }
    std::string s;
    if (cp < 0x80) s += static_cast<char>(cp);
    else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string s = spell(b);
    if (s == "\"" || s == "\\") s = "\\" + s;
    vocab += "\"" + s + "\": " + std::to_string(b) + ", ";
  }
  vocab += "\"ab\": 256, \"abc\": 257, \"<|endoftext|>\": 258";
  return R"({"added_tokens": [{"id": 258, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
    "rstrip": false, "normalized": false, "special": true}], "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "decoder": {"type": "ByteLevel"}, )" + extra +
         R"("model": {"type": "BPE", "dropout": null, "vocab": {)" + vocab + R"(}, "merges": )" + merges + "}}";
}

}  // namespace

TEST(TokenizerJson, LoadsMergesAsStringsOrPairsAndAddedTokens) {
  TempDir dir;
  for (const std::string merges : {R"(["a b", "ab c"])", R"([["a", "b"], ["ab", "c"]])"}) {
    write_file(dir.path / "tokenizer.json", tiny_bpe_json(merges));
    const Tokenizer tok = Tokenizer::load(dir.path / "tokenizer.json");
    EXPECT_EQ(tok.vocab_size(), 259);
    EXPECT_EQ(tok.encode("abc<|endoftext|>ab"), (std::vector<int32_t>{257, 258, 256}));
    EXPECT_EQ(tok.bos_id(), 258);
    EXPECT_EQ(tok.eos_id(), 258);
    EXPECT_EQ(tok.decode(std::vector<int32_t>{257, 258, 32}), "abc<|endoftext|> ");
    // save() writes a file load() reads back to the same tokenizer.
    tok.save(dir.path / "again.json");
    const Tokenizer again = Tokenizer::load(dir.path / "again.json");
    EXPECT_EQ(again.encode("abc<|endoftext|>ab cab"), tok.encode("abc<|endoftext|>ab cab"));
  }
}

TEST(TokenizerJson, RejectsUnsupportedFieldsByName) {
  TempDir dir;
  const fs::path file = dir.path / "tokenizer.json";
  auto load_error = [&](const std::string& json) {
    write_file(file, json);
    return error_of([&] { Tokenizer::load(file); });
  };
  EXPECT_NE(load_error(R"({"model": {"type": "Unigram", "vocab": []}})").find("model.type: 'Unigram'"), std::string::npos);
  EXPECT_NE(load_error(R"({"normalizer": {"type": "NFC"}, "model": {"type": "BPE"}})").find("normalizer: 'NFC'"),
            std::string::npos);
  std::string json = tiny_bpe_json(R"(["a b"])");
  json.replace(json.find("\"ByteLevel\", \"add_prefix_space\""), 11, "\"Whitespace\"");
  EXPECT_NE(load_error(json).find("pre_tokenizer.type: 'Whitespace'"), std::string::npos);
  EXPECT_NE(load_error(tiny_bpe_json(R"(["a zz"])")).find("model.merges[0]: token 'zz' is not in model.vocab"),
            std::string::npos);
  EXPECT_NE(load_error("{not json").find("invalid JSON"), std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::load(dir.path / "missing.json"); }).find("not found"), std::string::npos);
}

TEST(TokenizerJson, TokenizerConfigSuppliesBosEos) {
  TempDir dir;
  write_file(dir.path / "tokenizer.json", tiny_bpe_json(R"(["a b"])"));
  write_file(dir.path / "tokenizer_config.json", R"({"bos_token": "abc", "eos_token": {"content": "<|endoftext|>"}})");
  const Tokenizer tok = Tokenizer::load(dir.path);
  EXPECT_EQ(tok.bos_id(), 257);
  EXPECT_EQ(tok.eos_id(), 258);
}

namespace {

// The pieces a Split pre-tokenizer cuts `text` into.
std::vector<std::string> split(const std::string& pattern, tandem::SplitBehavior behavior, bool invert,
                               std::string_view text, bool literal = false) {
  const tandem::RegexSplitter splitter(tandem::SplitSpec{pattern, literal, behavior, invert}, "test");
  std::vector<std::string_view> pieces;
  splitter.split(text, pieces);
  return {pieces.begin(), pieces.end()};
}

using Pieces = std::vector<std::string>;

}  // namespace

// Expected pieces are what HF tokenizers' pre_tokenizers.Split(...).pre_tokenize_str gives.
TEST(SplitPreTokenizer, BehaviorsMatchHf) {
  using B = tandem::SplitBehavior;
  EXPECT_EQ(split("-", B::Removed, false, "a--b-c-"), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(split("-", B::Removed, true, "a--b-c-"), (Pieces{"-", "-", "-", "-"}));
  EXPECT_EQ(split("-", B::Isolated, false, "a--b-c-"), (Pieces{"a", "-", "-", "b", "-", "c", "-"}));
  EXPECT_EQ(split("-", B::Isolated, true, "a--b-c-"), (Pieces{"a", "-", "-", "b", "-", "c", "-"}));
  EXPECT_EQ(split("-", B::MergedWithPrevious, false, "a--b-c-"), (Pieces{"a-", "-", "b-", "c-"}));
  EXPECT_EQ(split("-", B::MergedWithPrevious, true, "a--b-c-"), (Pieces{"a", "-", "-b", "-c", "-"}));
  EXPECT_EQ(split("-", B::MergedWithNext, false, "a--b-c-"), (Pieces{"a", "-", "-b", "-c", "-"}));
  EXPECT_EQ(split("-", B::MergedWithNext, true, "a--b-c-"), (Pieces{"a-", "-", "b-", "c-"}));
  EXPECT_EQ(split("-", B::Contiguous, false, "a--b-c-"), (Pieces{"a", "--", "b", "-", "c", "-"}));
  EXPECT_EQ(split("-", B::Contiguous, true, "a--b-c-"), (Pieces{"a", "--", "b", "-", "c", "-"}));

  EXPECT_EQ(split(R"(\d)", B::Removed, false, "12ab3"), (Pieces{"ab"}));
  EXPECT_EQ(split(R"(\d)", B::Removed, true, "12ab3"), (Pieces{"1", "2", "3"}));
  EXPECT_EQ(split(R"(\d)", B::MergedWithPrevious, false, "12ab3"), (Pieces{"1", "2", "ab3"}));
  EXPECT_EQ(split(R"(\d)", B::MergedWithPrevious, true, "12ab3"), (Pieces{"1", "2ab", "3"}));
  EXPECT_EQ(split(R"(\d)", B::MergedWithNext, false, "12ab3"), (Pieces{"1", "2ab", "3"}));
  EXPECT_EQ(split(R"(\d)", B::MergedWithNext, true, "12ab3"), (Pieces{"1", "2", "ab3"}));
  EXPECT_EQ(split(R"(\d)", B::Contiguous, false, "12ab3"), (Pieces{"12", "ab", "3"}));
  EXPECT_TRUE(split(R"(\d)", B::Isolated, false, "").empty());
}

TEST(SplitPreTokenizer, EmptyMatchesAnchorsAndLiterals) {
  using B = tandem::SplitBehavior;
  // Empty matches cut like Oniguruma's find_iter; they never yield empty pieces.
  EXPECT_EQ(split("x*", B::Isolated, false, "abx"), (Pieces{"a", "b", "x"}));
  EXPECT_EQ(split("x*", B::Removed, false, "abx"), (Pieces{"a", "b"}));
  EXPECT_EQ(split("x*", B::MergedWithNext, false, "abx"), (Pieces{"a", "b", "x"}));
  // $ and ^ match at line breaks, as in Oniguruma (DeepSeek-LLM's "\s+$").
  EXPECT_EQ(split(R"(\s+$)", B::Isolated, false, "a  \nb  \n"), (Pieces{"a", "  ", "\nb", "  \n"}));
  EXPECT_EQ(split("^a", B::Isolated, false, "a\na\n"), (Pieces{"a", "\n", "a", "\n"}));
  // {"String": ...} patterns are plain text. (An empty one cuts the text into characters, as HF
  // does: checked against HF itself in tests/python/test_tokenizer_hf.py.)
  EXPECT_EQ(split(".", B::Removed, false, "a.b", true), (Pieces{"a", "b"}));
  // Non-ASCII ranges and properties work on codepoints.
  EXPECT_EQ(split("[一-龥]+|\\p{N}", B::Isolated, false, "ab中文12"), (Pieces{"ab", "中文", "1", "2"}));
}

TEST(TokenizerJson, SplitSequenceLoadsSavesAndRejectsByName) {
  TempDir dir;
  const std::string bl = R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false})";
  std::string json = tiny_bpe_json(R"(["a b", "ab c"])");
  const std::string old_pre = R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})";
  json.replace(json.find(old_pre), old_pre.size(),
               R"({"type": "Sequence", "pretokenizers": [
                   {"type": "Split", "pattern": {"Regex": "[\r\n]"}, "behavior": "Isolated", "invert": false},
                   {"type": "Split", "pattern": {"String": "b"}, "behavior": "MergedWithNext", "invert": false},
                   {"type": "Split", "pattern": {"Regex": " +"}, "behavior": "Removed", "invert": false}, )" + bl + "]}");
  // An empty Sequence normalizer is accepted as "none".
  json.replace(json.find(R"("normalizer": null)"), 18, R"("normalizer": {"type": "Sequence", "normalizers": []})");
  write_file(dir.path / "tokenizer.json", json);
  const Tokenizer tok = Tokenizer::load(dir.path);
  // "abc ab\nabc" -> "a" "bc" | "a" "b" | "\n" | "a" "bc": the merge a+b never crosses a cut.
  const auto ids = tok.encode("abc ab\nabc");
  EXPECT_EQ(ids, (std::vector<int32_t>{'a', 'b', 'c', 'a', 'b', 10, 'a', 'b', 'c'}));
  EXPECT_EQ(tok.encode("abcab"), (std::vector<int32_t>{'a', 'b', 'c', 'a', 'b'}));
  tok.save(dir.path / "again.json");
  const std::string saved = read_file(dir.path / "again.json");
  EXPECT_NE(saved.find(R"("String": "b")"), std::string::npos) << saved.substr(0, 1500);
  EXPECT_NE(saved.find(R"("behavior": "MergedWithNext")"), std::string::npos);
  EXPECT_NE(saved.find(R"("behavior": "Removed")"), std::string::npos);
  EXPECT_EQ(Tokenizer::load(dir.path / "again.json").encode("abc ab\nabc"), ids);

  auto load_error = [&](const std::string& bad) {
    write_file(dir.path / "bad.json", bad);
    return error_of([&] { Tokenizer::load(dir.path / "bad.json"); });
  };
  std::string bad = json;
  bad.replace(bad.find(R"("normalizers": [])"), 17, R"("normalizers": [{"type": "NFC"}])");
  EXPECT_NE(load_error(bad).find("normalizer: 'Sequence' is not supported"), std::string::npos) << load_error(bad);
  bad = json;
  bad.replace(bad.find("MergedWithNext"), 14, "Sideways");
  EXPECT_NE(load_error(bad).find("pre_tokenizer.pretokenizers[1].behavior: 'Sideways'"), std::string::npos) << load_error(bad);
  bad = json;
  bad.replace(bad.find(R"({"String": "b"})"), 15, R"({"Regex": "(b"})");
  EXPECT_NE(load_error(bad).find("pre_tokenizer.pretokenizers[1]: cannot compile regex '(b'"), std::string::npos)
      << load_error(bad);
  bad = json;
  bad.replace(bad.find(R"({"String": "b"})"), 15, R"({"Glob": "b"})");
  EXPECT_NE(load_error(bad).find("pre_tokenizer.pretokenizers[1].pattern"), std::string::npos) << load_error(bad);
}
