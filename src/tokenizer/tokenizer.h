// Text <-> token ids. Two kinds, both stored as HF tokenizers `tokenizer.json` files so that the
// Python ecosystem reads them too:
//  - character: one token per distinct Unicode codepoint (WordLevel model, Split-every-char
//    pre-tokenizer, Fuse decoder);
//  - GPT-2 style byte-level BPE (trained here, or loaded from HF / converted GGUF files),
//    pre-tokenized by ByteLevel's GPT-2 regex or, as DeepSeek's files do, by a Sequence of Split
//    regexes (any HF behavior, invert, Regex or String patterns) followed by ByteLevel.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

class Tokenizer {
 public:
  // One token per distinct codepoint of `text`, ids in codepoint order. Throws on invalid UTF-8.
  static Tokenizer train_char(std::string_view text);
  // 256 byte tokens plus merges learned on `text` (GPT-2 pre-tokenization) up to vocab_size tokens
  // (fewer if the text runs out of pairs). No special tokens.
  static Tokenizer train_bpe(std::string_view text, int vocab_size);
  // A tokenizer.json file, or a directory holding one. A tokenizer_config.json beside it, if any,
  // supplies bos_token / eos_token.
  static Tokenizer load(const std::filesystem::path& path);
  // Writes HF tokenizers' tokenizer.json format, atomically.
  void save(const std::filesystem::path& path) const;

  // The vocabulary as GGUF's tokenizer.ggml.* keys hold it (llama.cpp's "gpt2" tokenizer model:
  // byte-level BPE). Only GPT-2 pre-tokenization (pre "gpt-2") is expressed; other tokenizers are
  // refused naming what they use. A character tokenizer of ASCII characters is written as a BPE
  // vocabulary without merges (the same ids) and reads back as BPE. tokenizer_gguf.cpp.
  struct GgufVocab {
    std::string pre;                  // tokenizer.ggml.pre
    std::vector<std::string> tokens;  // spelling by id (byte-level)
    std::vector<int32_t> types;       // llama.cpp token types: 1 normal, 3 control, 4 user-defined
    std::vector<std::string> merges;  // "a b" by rank
    std::optional<int32_t> bos, eos;
  };
  GgufVocab to_gguf() const;
  static Tokenizer from_gguf(const GgufVocab& v, const std::string& where);

  // Added tokens present in the text (e.g. "<|endoftext|>") become their ids, as in HF's default.
  // Never adds BOS/EOS. Throws if some character or byte has no token, naming it and its offset.
  std::vector<int32_t> encode(std::string_view text) const;
  // Concatenated bytes of the tokens (may be invalid UTF-8 if the ids split a character).
  std::string decode(std::span<const int32_t> ids) const;

  int vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // Spelling of a token as stored in the vocabulary (byte-level for BPE), for diagnostics.
  const std::string& token(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;  // immutable, so copies share it safely
};

}  // namespace tandem
