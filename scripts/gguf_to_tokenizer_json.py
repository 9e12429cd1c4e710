#!/usr/bin/env python3
"""Convert the vocabulary of a GGUF file into a Hugging Face `tokenizer.json`.

Supports GPT-2 style byte-level BPE vocabularies (tokenizer.ggml.model == "gpt2") whose
pre-tokenizer (tokenizer.ggml.pre) is one of:
  - "gpt-2" / "default": the GPT-2 regex (ByteLevel with use_regex);
  - "deepseek-llm", "deepseek-coder": the Sequence of Split regexes that the tokenizer.json of
    DeepSeek's HF models spells out (the same lists llama.cpp keeps in llama-vocab.cpp),
    followed by ByteLevel without its own regex.
Other pre-tokenizers are refused: GGUF stores only their name, and guessing the regex wrong would
silently change every encoding.

Usage:
  gguf_to_tokenizer_json.py MODEL.gguf OUT.json   # writes just OUT.json
  gguf_to_tokenizer_json.py MODEL.gguf OUT_DIR    # writes OUT_DIR/tokenizer.json and
                                                  # OUT_DIR/tokenizer_config.json (bos/eos tokens)
"""
import argparse
import json
import os
import sys
import tempfile

import gguf

# llama.cpp's token types (tokenizer.ggml.token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
GPT2_PRE_TOKENIZERS = {"gpt-2", "default"}

# DeepSeek-LLM's letters: cased letters (Lu/Ll/Lt) listed as ranges, spelled with escapes here
# because the literal characters include canonical singletons (U+1F7D, U+1FBE, U+1FD3, U+1FDB,
# U+2126, U+212A) that any Unicode normalisation of this file would silently change. The JSON
# output holds the literal characters, as DeepSeek's tokenizer.json does.
DEEPSEEK_LLM_LETTERS = (
    "\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1"
    "\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5"
    "\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a"
    "\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d"
    "\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3"
    "\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115"
    "\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943"
)
CJK_HANGUL = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"  # [一-龥ࠀ-一가-퟿]+

# Split regexes (behavior Isolated), applied in order, as in the HF tokenizer.json of each model
# (the same lists llama.cpp's llama-vocab.cpp keeps per pre-tokenizer name).
# "[\r\n]" holds a real CR and LF, as the JSON string "[\\r\\n]" does there.
SPLIT_PRE_TOKENIZERS = {
    "deepseek-llm": [
        "[\r\n]",
        "\\s?[A-Za-z" + DEEPSEEK_LLM_LETTERS + "]+",
        "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",  # \s?[!-/:-~！-／：-～‘-‟　-。]+
        "\\s+$",
        CJK_HANGUL,
        "\\p{N}+",
    ],
    "deepseek-coder": [
        "[\r\n]",
        "\\s?\\p{L}+",
        "\\s?\\p{P}+",
        CJK_HANGUL,
        "\\p{N}",
    ],
}


def pre_tokenizer(gguf_path, pre):
    """The tokenizer.json pre_tokenizer for GGUF pre-tokenizer name `pre`."""
    if pre in GPT2_PRE_TOKENIZERS:
        return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if pre in SPLIT_PRE_TOKENIZERS:
        splits = [{"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
                  for regex in SPLIT_PRE_TOKENIZERS[pre]]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
        return {"type": "Sequence", "pretokenizers": splits + [byte_level]}
    known = sorted(GPT2_PRE_TOKENIZERS | SPLIT_PRE_TOKENIZERS.keys())
    raise SystemExit(f"{gguf_path}: tokenizer.ggml.pre is {pre!r}; supported: {known}")


def post_processor(tokens, bos, add_bos):
    """BOS in front of every sequence (as DeepSeek's TemplateProcessing does) when the GGUF asks for
    it, else GPT-2's ByteLevel post-processor (which adds nothing)."""
    if not add_bos or bos is None:
        return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
    special = {"SpecialToken": {"id": tokens[bos], "type_id": 0}}
    return {
        "type": "TemplateProcessing",
        "single": [special, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [special, {"Sequence": {"id": "A", "type_id": 0}}, special, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {tokens[bos]: {"id": tokens[bos], "ids": [bos], "tokens": [tokens[bos]]}},
    }


def field_strings(reader, key):
    field = reader.fields.get(key)
    if field is None:
        return None
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def field_ints(reader, key):
    field = reader.fields.get(key)
    if field is None:
        return None
    return [int(field.parts[i][0]) for i in field.data]


def field_scalar(reader, key):
    values = field_ints(reader, key)
    return None if values is None else values[0]


def convert(gguf_path):
    """Returns (tokenizer_json, bos_token, eos_token) for the vocabulary in gguf_path."""
    reader = gguf.GGUFReader(gguf_path)
    model = (field_strings(reader, "tokenizer.ggml.model") or [None])[0]
    if model != "gpt2":
        raise SystemExit(f"{gguf_path}: tokenizer.ggml.model is {model!r}; only 'gpt2' (byte-level BPE) is supported")
    pre = (field_strings(reader, "tokenizer.ggml.pre") or ["default"])[0]
    pre_tokenizer_json = pre_tokenizer(gguf_path, pre)
    tokens = field_strings(reader, "tokenizer.ggml.tokens")
    merges = field_strings(reader, "tokenizer.ggml.merges")
    if tokens is None or merges is None:
        raise SystemExit(f"{gguf_path}: tokenizer.ggml.tokens and tokenizer.ggml.merges are required")
    types = field_ints(reader, "tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)

    # Control and user-defined tokens are matched whole in the text, as HF does with added_tokens.
    added = [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": types[i] == TOKEN_CONTROL}
        for i in range(len(tokens)) if types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
    ]
    bos, eos = (field_scalar(reader, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos"))
    for key, value in (("bos", bos), ("eos", eos)):
        if value is not None and not 0 <= value < len(tokens):
            raise SystemExit(f"{gguf_path}: tokenizer.ggml.{key}_token_id {value} is outside the vocabulary")
    add_bos = bool(field_scalar(reader, "tokenizer.ggml.add_bos_token") or 0)
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer_json,
        "post_processor": post_processor(tokens, bos, add_bos),
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
            "vocab": {token: i for i, token in enumerate(tokens)},
            "merges": merges,  # "a b" strings, as GGUF stores them
        },
    }
    if len(tokenizer["model"]["vocab"]) != len(tokens):
        raise SystemExit(f"{gguf_path}: tokenizer.ggml.tokens holds duplicate tokens")
    return tokenizer, (tokens[bos] if bos is not None else None), (tokens[eos] if eos is not None else None)


def write_json_atomic(path, obj):
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, delete=False, suffix=".tmp") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", help="GGUF file holding the vocabulary")
    parser.add_argument("out", help="tokenizer.json path, or a directory to write tokenizer.json + tokenizer_config.json into")
    args = parser.parse_args(argv)
    tokenizer, bos, eos = convert(args.gguf)
    if args.out.endswith(".json"):
        write_json_atomic(args.out, tokenizer)
    else:
        os.makedirs(args.out, exist_ok=True)
        write_json_atomic(os.path.join(args.out, "tokenizer.json"), tokenizer)
        write_json_atomic(os.path.join(args.out, "tokenizer_config.json"), {"bos_token": bos, "eos_token": eos})
    print(f"wrote {args.out}: {len(tokenizer['model']['vocab'])} tokens, {len(tokenizer['model']['merges'])} merges, "
          f"bos {bos!r}, eos {eos!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
