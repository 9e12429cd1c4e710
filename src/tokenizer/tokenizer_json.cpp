// Reading and writing HF tokenizers' `tokenizer.json`. Only the shapes tandem can honour exactly
// are accepted; anything else is rejected naming the JSON field, rather than silently encoding
// differently from HF.
#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

// The value at key, or nullptr when it is absent or JSON null (HF writes null for "unset").
const json* get(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

// {"type": "Sequence", list_key: []}
bool is_empty_sequence(const json& v, const char* list_key) {
  if (!v.is_object() || v.value("type", "") != "Sequence") return false;
  const json* list = get(v, list_key);
  return list && list->is_array() && list->empty();
}

struct Reader {
  std::string file;  // prefixes every message

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(file + ": " + field + ": " + what);
  }
  std::string str(const json& obj, const char* key, const std::string& field) const {
    const json* v = get(obj, key);
    if (!v || !v->is_string()) fail(field + "." + key, "expected a string");
    return v->get<std::string>();
  }
  bool flag(const json& obj, const char* key, bool fallback, const std::string& field) const {
    const json* v = get(obj, key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(field + "." + key, "expected true or false");
    return v->get<bool>();
  }
  // Fails unless the optional string setting is unset or "".
  void require_empty(const json& obj, const char* key, const std::string& field) const {
    const json* v = get(obj, key);
    if (v && !(v->is_string() && v->get<std::string>().empty()))
      fail(field + "." + key, "must be null or \"\" (got " + v->dump() + ")");
  }
};

// {"type": "Split", "pattern": {"Regex": ...} or {"String": ...}, "behavior": ..., "invert": ...}
SplitSpec read_split(const Reader& r, const json& pt, const std::string& field) {
  SplitSpec spec;
  const json* pattern = get(pt, "pattern");
  if (!pattern || !pattern->is_object() || pattern->size() != 1 || !(get(*pattern, "Regex") || get(*pattern, "String")))
    r.fail(field + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
  spec.literal = get(*pattern, "String") != nullptr;
  spec.pattern = r.str(*pattern, spec.literal ? "String" : "Regex", field + ".pattern");
  const std::string behavior = r.str(pt, "behavior", field);
  const auto parsed = split_behavior_from_name(behavior);
  if (!parsed)
    r.fail(field + ".behavior", "'" + behavior + "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
  spec.behavior = *parsed;
  spec.invert = r.flag(pt, "invert", false, field);
  return spec;
}

std::shared_ptr<const RegexSplitter> make_split(const Reader& r, const json& pt, const std::string& field) {
  return std::make_shared<const RegexSplitter>(read_split(r, pt, field), r.file + ": " + field);
}

void read_byte_level_pre_tokenizer(const Reader& r, const json& pt, const std::string& field, Tokenizer::Impl& m) {
  m.add_prefix_space = r.flag(pt, "add_prefix_space", true, field);
  if (r.flag(pt, "use_regex", true, field))
    m.byte_level_regex = std::make_shared<const RegexSplitter>(kGpt2Pattern, r.file + ": " + field);
}

void read_bpe_pre_tokenizer(const Reader& r, const json* pt, Tokenizer::Impl& m) {
  if (!pt) r.fail("pre_tokenizer", "null is not supported for a BPE model (expected ByteLevel)");
  const std::string type = r.str(*pt, "type", "pre_tokenizer");
  if (type == "ByteLevel") return read_byte_level_pre_tokenizer(r, *pt, "pre_tokenizer", m);
  if (type != "Sequence")
    r.fail("pre_tokenizer.type", "'" + type + "' is not supported (expected ByteLevel, or a Sequence of Split then ByteLevel)");
  const json* list = get(*pt, "pretokenizers");
  if (!list || !list->is_array() || list->empty()) r.fail("pre_tokenizer.pretokenizers", "expected a non-empty list");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string field = "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]";
    const json& item = (*list)[i];
    const std::string item_type = r.str(item, "type", field);
    const bool last = i + 1 == list->size();
    if (item_type == "Split" && !last) {
      m.splits.push_back(make_split(r, item, field));
    } else if (item_type == "ByteLevel" && last) {
      read_byte_level_pre_tokenizer(r, item, field, m);
    } else {
      r.fail(field + ".type", "'" + item_type + "' is not supported here (expected Split items followed by one ByteLevel)");
    }
  }
}

// model.vocab as spellings by id; ids must be dense.
void read_vocab(const Reader& r, const json& model, Tokenizer::Impl& m) {
  const json* vocab = get(model, "vocab");
  if (!vocab || !vocab->is_object()) r.fail("model.vocab", "expected an object mapping tokens to ids");
  m.model_tokens.assign(vocab->size(), {});
  m.model_ids.reserve(vocab->size());
  std::vector<bool> seen(vocab->size(), false);
  for (const auto& [token, id_json] : vocab->items()) {
    if (!id_json.is_number_integer()) r.fail("model.vocab['" + token + "']", "expected an integer id");
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(vocab->size()) || seen[id])
      r.fail("model.vocab['" + token + "']", "id " + std::to_string(id) + " is out of range or repeated (ids must be 0.." +
                                                 std::to_string(vocab->size() - 1) + ", each once)");
    seen[id] = true;
    m.model_tokens[id] = token;
    m.model_ids.emplace(token, static_cast<int32_t>(id));
  }
}

void read_bpe_model(const Reader& r, const json& model, Tokenizer::Impl& m) {
  m.kind = Tokenizer::Impl::Kind::ByteBpe;
  read_vocab(r, model, m);
  if (get(model, "dropout")) r.fail("model.dropout", "BPE dropout is not supported (must be null)");
  r.require_empty(model, "continuing_subword_prefix", "model");
  r.require_empty(model, "end_of_word_suffix", "model");
  if (r.flag(model, "byte_fallback", false, "model")) r.fail("model.byte_fallback", "true is not supported");
  m.ignore_merges = r.flag(model, "ignore_merges", false, "model");
  const json* merges = get(model, "merges");
  if (!merges || !merges->is_array()) r.fail("model.merges", "expected a list");
  m.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    const json& item = (*merges)[i];
    std::string a, b;
    if (item.is_string()) {  // older files: "a b"
      const std::string s = item.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        r.fail(field, "'" + s + "' is not two tokens separated by one space");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (item.is_array() && item.size() == 2 && item[0].is_string() && item[1].is_string()) {  // ["a", "b"]
      a = item[0].get<std::string>();
      b = item[1].get<std::string>();
    } else {
      r.fail(field, "expected \"a b\" or [\"a\", \"b\"]");
    }
    auto ia = m.model_ids.find(a), ib = m.model_ids.find(b);
    if (ia == m.model_ids.end()) r.fail(field, "token '" + a + "' is not in model.vocab");
    if (ib == m.model_ids.end()) r.fail(field, "token '" + b + "' is not in model.vocab");
    m.merges.emplace_back(ia->second, ib->second);
  }
}

std::optional<int32_t> config_token_id(const Reader& r, const json& config, const char* key, const Tokenizer::Impl& m) {
  const json* v = get(config, key);
  if (!v) return std::nullopt;
  std::string content;
  if (v->is_string()) content = v->get<std::string>();
  else if (v->is_object() && get(*v, "content") && (*v)["content"].is_string()) content = (*v)["content"].get<std::string>();
  else r.fail(key, "expected a string or {\"content\": ...}");
  for (const auto& t : m.added)
    if (t.content == content) return t.id;
  if (auto it = m.model_ids.find(content); it != m.model_ids.end()) return it->second;
  r.fail(key, "token '" + content + "' is not in the vocabulary");
}

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

json parse_json(const fs::path& path) {
  try {
    return json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    throw Error(path.string() + ": invalid JSON: " + e.what());
  }
}

}  // namespace

Tokenizer Tokenizer::load(const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / "tokenizer.json" : path;
  check(fs::is_regular_file(file), "tokenizer file not found: ", file.string());
  const json j = parse_json(file);
  const Reader r{file.string()};
  if (!j.is_object()) r.fail("(top level)", "expected a JSON object");
  auto impl = std::make_shared<Impl>();
  Impl& m = *impl;

  // An empty Sequence normalizer (some converted files have one) does nothing, like null.
  if (const json* n = get(j, "normalizer"); n && !is_empty_sequence(*n, "normalizers"))
    r.fail("normalizer", "'" + n->value("type", n->dump()) + "' is not supported (must be null)");
  const json* model = get(j, "model");
  if (!model || !model->is_object()) r.fail("model", "expected an object");
  // Very old files omit model.type; a "merges" list identifies BPE there.
  const std::string type = get(*model, "type") ? r.str(*model, "type", "model") : (get(*model, "merges") ? "BPE" : "");
  const json* pre = get(j, "pre_tokenizer");
  const json* decoder = get(j, "decoder");
  const std::string decoder_type = decoder ? r.str(*decoder, "type", "decoder") : "null";
  if (type == "BPE") {
    read_bpe_model(r, *model, m);
    read_bpe_pre_tokenizer(r, pre, m);
    if (decoder_type != "ByteLevel") r.fail("decoder.type", "'" + decoder_type + "' is not supported for BPE (expected ByteLevel)");
  } else if (type == "WordLevel") {
    // WordLevel is accepted only as tandem's own character tokenizer.
    m.kind = Impl::Kind::Char;
    read_vocab(r, *model, m);
    const auto is_every_char = [&] {
      if (!pre || r.str(*pre, "type", "pre_tokenizer") != "Split") return false;
      const SplitSpec spec = read_split(r, *pre, "pre_tokenizer");
      return !spec.literal && spec.pattern == kEveryCharPattern && spec.behavior == SplitBehavior::Isolated;
    };
    if (!is_every_char())
      r.fail("pre_tokenizer", std::string("a WordLevel model is supported only as a character tokenizer, with a Split on regex ") +
                                  std::string(kEveryCharPattern));
    if (decoder_type != "Fuse") r.fail("decoder.type", "'" + decoder_type + "' is not supported for WordLevel (expected Fuse)");
  } else {
    r.fail("model.type", "'" + type + "' is not supported (expected BPE or WordLevel)");
  }

  if (const json* added = get(j, "added_tokens")) {
    if (!added->is_array()) r.fail("added_tokens", "expected a list");
    for (size_t i = 0; i < added->size(); ++i) {
      const std::string field = "added_tokens[" + std::to_string(i) + "]";
      const json& t = (*added)[i];
      const json* id = get(t, "id");
      if (!id || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() > INT32_MAX)
        r.fail(field + ".id", "expected a non-negative integer");
      AddedToken tok{id->get<int32_t>(), r.str(t, "content", field), r.flag(t, "special", false, field)};
      for (const char* key : {"single_word", "lstrip", "rstrip"})
        if (r.flag(t, key, false, field)) r.fail(field + "." + key, "true is not supported ('" + tok.content + "')");
      if (tok.id < static_cast<int32_t>(m.model_tokens.size()) && m.model_tokens[tok.id] != tok.content)
        r.fail(field, "'" + tok.content + "' has id " + std::to_string(tok.id) + ", which model.vocab gives to '" +
                          m.model_tokens[tok.id] + "'");
      m.added.push_back(std::move(tok));
    }
  }

  // BOS/EOS live in tokenizer_config.json (HF model directories), not in tokenizer.json.
  const fs::path config_file = file.parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(config_file)) {
    const json config = parse_json(config_file);
    const Reader cr{config_file.string()};
    if (config.is_object()) {
      m.bos = config_token_id(cr, config, "bos_token", m);
      m.eos = config_token_id(cr, config, "eos_token", m);
    }
  }
  m.finalize(file.string());
  return Tokenizer(impl);
}

void Tokenizer::save(const fs::path& path) const {
  const Impl& m = *impl_;
  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = ordered_json::array();
  for (const auto& t : m.added)
    j["added_tokens"].push_back({{"id", t.id}, {"content", t.content}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", t.special}});
  j["normalizer"] = nullptr;
  ordered_json model;
  if (m.kind == Impl::Kind::Char) {
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", kEveryCharPattern}}}, {"behavior", "Isolated"}, {"invert", false}};
    j["post_processor"] = nullptr;
    j["decoder"] = {{"type", "Fuse"}};
    // "<unk>" is not in the vocabulary, so HF fails on unknown characters just as tandem does.
    model = {{"type", "WordLevel"}, {"unk_token", "<unk>"}};
  } else {
    auto byte_level = [&](bool use_regex) {
      return ordered_json{{"type", "ByteLevel"}, {"add_prefix_space", m.add_prefix_space}, {"trim_offsets", true}, {"use_regex", use_regex}};
    };
    const bool use_regex = m.byte_level_regex != nullptr;
    if (m.splits.empty()) {
      j["pre_tokenizer"] = byte_level(use_regex);
    } else {
      ordered_json seq = ordered_json::array();
      for (const auto& split : m.splits) {
        const SplitSpec& spec = split->spec();
        seq.push_back({{"type", "Split"},
                       {"pattern", {{spec.literal ? "String" : "Regex", spec.pattern}}},
                       {"behavior", split_behavior_name(spec.behavior)},
                       {"invert", spec.invert}});
      }
      seq.push_back(byte_level(use_regex));
      j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", std::move(seq)}};
    }
    j["post_processor"] = nullptr;
    j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    model = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
             {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}};
    if (m.ignore_merges) model["ignore_merges"] = true;
  }

  // vocab and merges are written by hand: they hold up to ~100k entries and nlohmann's
  // ordered_json (needed to keep ids in order) inserts in linear time.
  const auto quote = [](const std::string& s) { return json(s).dump(-1, ' ', false); };
  std::string text = j.dump(1, ' ', false);
  text.resize(text.rfind('}'));  // reopen the top-level object to append "model"
  while (!text.empty() && text.back() == '\n') text.pop_back();
  std::string model_text = model.dump(-1, ' ', false);
  model_text.pop_back();  // reopen it to append vocab and merges
  model_text += ",\"vocab\":{";
  for (size_t id = 0; id < m.model_tokens.size(); ++id)
    model_text += (id ? ",\n  " : "\n  ") + quote(m.model_tokens[id]) + ":" + std::to_string(id);
  model_text += "\n }";
  if (m.kind == Impl::Kind::ByteBpe) {
    // "a b" strings are readable by every tokenizers version; pairs only if a token has a space.
    const bool pairs = std::any_of(m.merges.begin(), m.merges.end(), [&](const TokenPair& p) {
      return m.model_tokens[p.first].find(' ') != std::string::npos || m.model_tokens[p.second].find(' ') != std::string::npos;
    });
    model_text += ",\"merges\":[";
    for (size_t i = 0; i < m.merges.size(); ++i) {
      const std::string& a = m.model_tokens[m.merges[i].first];
      const std::string& b = m.model_tokens[m.merges[i].second];
      model_text += i ? ",\n  " : "\n  ";
      model_text += pairs ? '[' + quote(a) + ',' + quote(b) + ']' : quote(a + ' ' + b);
    }
    model_text += "\n ]";
  }
  text += ",\n \"model\": " + model_text + "}\n}\n";
  write_file_atomic(path, text);
}

}  // namespace tandem
