#!/usr/bin/env python3
"""Convert the vocabulary of a GGUF file into a Hugging Face `tokenizer.json`.

Supports GPT-2 style byte-level BPE vocabularies (tokenizer.ggml.model == "gpt2") whose
pre-tokenizer is the GPT-2 regex (tokenizer.ggml.pre "gpt-2" or "default"). Other
pre-tokenizers are refused: GGUF stores only their name, and guessing the regex wrong would
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
    if pre not in GPT2_PRE_TOKENIZERS:
        raise SystemExit(f"{gguf_path}: tokenizer.ggml.pre is {pre!r}; only the GPT-2 regex ({sorted(GPT2_PRE_TOKENIZERS)}) is supported")
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
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
            "vocab": {token: i for i, token in enumerate(tokens)},
            "merges": merges,  # "a b" strings, as GGUF stores them
        },
    }
    if len(tokenizer["model"]["vocab"]) != len(tokens):
        raise SystemExit(f"{gguf_path}: tokenizer.ggml.tokens holds duplicate tokens")
    bos, eos = (field_scalar(reader, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos"))
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
