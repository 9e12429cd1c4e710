// A byte-level BPE tokenizer <-> the vocabulary arrays of a GGUF file (tokenizer.ggml.*), in the
// form llama.cpp's converter writes for GPT-2-style models: every id's spelling (added tokens at
// their ids), a type per id (normal, or control for special added tokens, user-defined for other
// added tokens), the merges as "a b" strings by rank, BOS/EOS ids.
#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_impl.h"

namespace tandem {

namespace {
constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4;
}

Tokenizer::GgufVocab Tokenizer::to_gguf() const {
  const Impl& m = *impl_;
  GgufVocab v;
  if (m.kind == Impl::Kind::Char) {
    // A character vocabulary of single-byte (ASCII) characters is a byte-level BPE vocabulary
    // without merges: each character is one byte-level symbol, so llama.cpp's BPE gives the same
    // ids. A multi-byte character would need merges through tokens the vocabulary lacks.
    v.pre = "gpt-2";
    for (int32_t id = 0; id < m.vocab_size; ++id) {
      const std::string& c = *m.id_spelling[id];
      check(c.size() == 1, "tokenizer: character token ", id, " '", c,
            "' is not a single byte; GGUF takes character vocabularies of ASCII characters only (train a BPE "
            "tokenizer with `tandem prepare --tokenizer bpe:VOCAB_SIZE` to export this text's model)");
      v.tokens.push_back(byte_level::encode(c));
    }
    v.types.assign(m.vocab_size, kNormal);
    v.bos = m.bos;
    v.eos = m.eos;
    return v;
  }
  // llama.cpp's "gpt-2" pre-tokenizer is exactly ByteLevel with the GPT-2 regex, no prefix space.
  check(m.splits.empty() && m.byte_level_regex && !m.add_prefix_space && !m.ignore_merges,
        "tokenizer: only GPT-2 pre-tokenization (ByteLevel with its regex, no prefix space, no Split "
        "pre-tokenizers, no ignore_merges) has a GGUF pre-tokenizer name here; this tokenizer has ",
        m.splits.size(), " Split pre-tokenizer(s)", m.add_prefix_space ? " and add_prefix_space" : "");
  v.pre = "gpt-2";
  v.tokens.reserve(m.vocab_size);
  v.types.assign(m.vocab_size, kNormal);
  for (int32_t id = 0; id < m.vocab_size; ++id) v.tokens.push_back(*m.id_spelling[id]);
  for (const auto& t : m.added) v.types[t.id] = t.special ? kControl : kUserDefined;
  for (const auto& [a, b] : m.merges) {
    const std::string &sa = m.model_tokens[a], &sb = m.model_tokens[b];
    check(sa.find(' ') == std::string::npos && sb.find(' ') == std::string::npos, "tokenizer: merge '", sa, "' + '",
          sb, "' holds a space, which GGUF's \"a b\" merge strings cannot express");
    v.merges.push_back(sa + " " + sb);
  }
  v.bos = m.bos;
  v.eos = m.eos;
  return v;
}

Tokenizer Tokenizer::from_gguf(const GgufVocab& v, const std::string& where) {
  check(v.pre == "gpt-2", where, ": key 'tokenizer.ggml.pre' is '", v.pre,
        "'; tandem reads the 'gpt-2' pre-tokenizer (byte-level BPE with GPT-2's regex)");
  check(v.types.empty() || v.types.size() == v.tokens.size(), where, ": key 'tokenizer.ggml.token_type' has ",
        v.types.size(), " entries for ", v.tokens.size(), " tokens");
  auto impl = std::make_shared<Impl>();
  Impl& m = *impl;
  m.kind = Impl::Kind::ByteBpe;
  m.byte_level_regex = std::make_shared<const RegexSplitter>(kGpt2Pattern, where + ": GPT-2 pre-tokenizer");
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const int32_t type = v.types.empty() ? kNormal : v.types[id];
    check(type == kNormal || type == kControl || type == kUserDefined, where, ": token ", id, " '", v.tokens[id],
          "' has type ", type, " (tandem reads normal, control and user-defined tokens)");
    check(m.model_ids.emplace(v.tokens[id], static_cast<int32_t>(id)).second, where, ": token ", id, " '", v.tokens[id],
          "' appears twice in 'tokenizer.ggml.tokens'");
    m.model_tokens.push_back(v.tokens[id]);
    if (type != kNormal) m.added.push_back({static_cast<int32_t>(id), v.tokens[id], type == kControl});
  }
  for (size_t i = 0; i < v.merges.size(); ++i) {
    const std::string& s = v.merges[i];
    const size_t sp = s.find(' ');
    check(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, where, ": merge ", i, " '", s,
          "' is not two tokens separated by one space");
    auto a = m.model_ids.find(s.substr(0, sp)), b = m.model_ids.find(s.substr(sp + 1));
    check(a != m.model_ids.end() && b != m.model_ids.end(), where, ": merge ", i, " '", s,
          "' names a token missing from 'tokenizer.ggml.tokens'");
    m.merges.emplace_back(a->second, b->second);
  }
  const auto n = static_cast<int32_t>(v.tokens.size());
  for (auto [id, key] : {std::pair{v.bos, "bos"}, std::pair{v.eos, "eos"}})
    check(!id || (*id >= 0 && *id < n), where, ": key 'tokenizer.ggml.", key, "_token_id' = ", id.value_or(0),
          " is outside the ", n, " tokens");
  m.bos = v.bos;
  m.eos = v.eos;
  m.finalize(where);
  return Tokenizer(impl);
}

}  // namespace tandem
