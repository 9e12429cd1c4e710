"""DeepSeek-style tokenizers: a Sequence of Split pre-tokenizers followed by ByteLevel (use_regex
false), as the tokenizer.json files of DeepSeek's models spell them.

a) The DeepSeek-LLM and DeepSeek-Coder vocabularies (llama.cpp's test GGUFs in
   tests/data/tokenizer-vectors/), converted by scripts/gguf_to_tokenizer_json.py, reproduce every
   line of their .gguf.out (made by HF, without BOS) in tandem and in HF tokenizers.
b) HF tokenizers and tandem agree on those tokenizer.json files over the whole corpus.
c) The same files saved again by HF tokenizers itself (its own serialisation) load in tandem with
   identical ids, special tokens in the text included; BOS/EOS come from tokenizer_config.json.
d) Every Split behavior (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous), invert,
   String patterns, anchors and empty matches: tandem cuts the text exactly where HF does.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")

VECTORS = Path(__file__).resolve().parents[1] / "data" / "tokenizer-vectors"
VOCABS = {  # name -> (vocab size, bos id, eos id), from the GGUF files
    "deepseek-llm": (102400, 100000, 100001),
    "deepseek-coder": (32256, 32013, 32014),
}
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


def tandem_ids(tandem, tokenizer: Path, input_file: Path, *extra) -> list[int]:
    out = tandem("tokenize", "--tokenizer", tokenizer, "--input", input_file, *extra).stdout
    return [int(x) for x in out.split()]


def read_vectors(name: str) -> tuple[list[str], list[list[int]]]:
    inp = (VECTORS / f"ggml-vocab-{name}.gguf.inp").read_bytes().decode("utf-8")
    strings = inp.split("\n__ggml_vocab_test__\n")
    if strings and strings[-1] == "":
        strings.pop()
    lines = (VECTORS / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    expected = [[int(x) for x in line.split()] for line in lines[: len(strings)]]
    assert len(strings) == len(expected) == 46
    return strings, expected


def first_difference(a: list[int], b: list[int]) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"lengths {len(a)} vs {len(b)}; first difference at {i}: {a[i:i + 5]} vs {b[i:i + 5]}"


@pytest.fixture(scope="session", params=list(VOCABS))
def deepseek(request, repo_root, session_tmp):
    """(name, directory holding the converted tokenizer.json + tokenizer_config.json)."""
    pytest.importorskip("gguf")
    name = request.param
    out = session_tmp / name
    subprocess.run([sys.executable, str(repo_root / "scripts" / "gguf_to_tokenizer_json.py"),
                    str(VECTORS / f"ggml-vocab-{name}.gguf"), str(out)], check=True)
    return name, out


def test_converted_pre_tokenizer_is_split_sequence(deepseek):
    _, out = deepseek
    pre = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]
    assert pre["type"] == "Sequence"
    *splits, byte_level = pre["pretokenizers"]
    assert len(splits) >= 5 and all(s["type"] == "Split" and s["behavior"] == "Isolated" for s in splits)
    assert splits[0]["pattern"] == {"Regex": "[\r\n]"}
    assert byte_level == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def test_deepseek_vectors(deepseek, tandem, tmp_path):
    name, out = deepseek
    strings, expected = read_vectors(name)
    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    for i, (s, want) in enumerate(zip(strings, expected)):
        assert hf.encode(s, add_special_tokens=False).ids == want, f"HF, test string {i}: {s!r}"
        f = tmp_path / f"in{i}.txt"
        f.write_bytes(s.encode("utf-8"))  # --input keeps leading dashes and newlines intact
        assert tandem_ids(tandem, out, f) == want, f"tandem, test string {i}: {s!r}"


def test_deepseek_corpus_matches_hf(deepseek, tandem, shakespeare_path):
    _, out = deepseek
    text = shakespeare_path.read_text(encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    expected = hf.encode(text, add_special_tokens=False).ids
    ours = tandem_ids(tandem, out, shakespeare_path)
    assert ours == expected, first_difference(ours, expected)


def test_deepseek_bos_eos_and_decode(deepseek, tandem):
    name, out = deepseek
    _, bos, eos = VOCABS[name]
    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = [int(x) for x in tandem("tokenize", "--tokenizer", out, "--text", "Hello world", "--bos").stdout.split()]
    assert ids == [bos] + hf.encode("Hello world", add_special_tokens=False).ids
    assert hf.encode("Hello world").ids == ids  # the converted file's post-processor adds BOS too
    text = f"{BOS}def f(x):\n    return x  # 中文\n{EOS}"
    decoded = tandem("tokenize", "--tokenizer", out, "--text", " ".join(map(str, hf.encode(text).ids)), "--decode").stdout
    assert decoded == BOS + text
    assert hf.encode(text, add_special_tokens=False).ids[-1] == eos


def test_hf_saved_deepseek_tokenizer_loads_in_tandem(deepseek, tandem, shakespeare_path, tmp_path):
    """HF tokenizers writes the file itself (its own field order, merges as pairs, ...)."""
    name, out = deepseek
    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    saved = tmp_path / "hf"
    saved.mkdir()
    hf.save(str(saved / "tokenizer.json"))
    shutil.copy(out / "tokenizer_config.json", saved / "tokenizer_config.json")
    assert json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]["type"] == "Sequence"
    strings, _ = read_vectors(name)
    text = (f"{BOS}" + "\n".join(strings) + f"{EOS}<｜fim▁hole｜>[PAD32100] ü Führer\r\n\t"
            + shakespeare_path.read_text(encoding="utf-8")[:200_000] + EOS)
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    ours = tandem_ids(tandem, saved, tmp_path / "text.txt", "--bos")
    expected = hf.encode(text).ids  # post-processor: BOS first
    _, bos, _ = VOCABS[name]
    assert ours[0] == expected[0] == bos
    assert ours == expected, first_difference(ours, expected)


# --- d) Split behaviors -------------------------------------------------------------------------

TRICKY = ("Hello,  world!! 1234 ab12cd 3.14\n\n  trailing   \n\tx\r\nyes? no... 'quoted' \"dq\"  \n"
          "naïve café 日本語テキスト 한국어 🦙🦙 — end   \u00a0nbsp\u0085nel\u2028ls  ")


def split_variants():
    from tokenizers import Regex, pre_tokenizers as pt
    bl = pt.ByteLevel(add_prefix_space=False, use_regex=False)
    return {
        "removed": [pt.Split(Regex(r"\s+"), "removed"), bl],
        "removed-invert": [pt.Split(Regex(r"\p{L}+|\p{N}"), "removed", invert=True), bl],
        "merged-with-previous": [pt.Split(Regex(r"[,.;:!?]+"), "merged_with_previous"), bl],
        "merged-with-previous-invert": [pt.Split(Regex(r"\s"), "merged_with_previous", invert=True), bl],
        "merged-with-next": [pt.Split(Regex(r"\s"), "merged_with_next"), bl],
        "merged-with-next-invert": [pt.Split(Regex(r"[aeiou]+"), "merged_with_next", invert=True), bl],
        "contiguous": [pt.Split(Regex(r"[aeiou\s]"), "contiguous"), bl],
        "contiguous-invert": [pt.Split(Regex(r"\p{L}"), "contiguous", invert=True), bl],
        "string-pattern": [pt.Split(" ", "merged_with_next"), pt.Split("e", "isolated"), bl],
        "empty-matches": [pt.Split(Regex(r"x*"), "merged_with_previous"), pt.Split(Regex(r"\b"), "contiguous"), bl],
        "anchors": [pt.Split(Regex(r"\s+$"), "isolated"), pt.Split(Regex(r"^\p{L}+"), "isolated"), bl],
        "prefix-space-per-piece": [pt.Split(Regex(r"[\r\n]"), "isolated"),
                                   pt.Split(Regex(r"\p{N}"), "isolated"),
                                   pt.ByteLevel(add_prefix_space=True, use_regex=False)],
        "splits-then-gpt2-regex": [pt.Split(Regex(r"\p{N}{1,3}"), "isolated"),
                                   pt.ByteLevel(add_prefix_space=False, use_regex=True)],
        "deepseek-v3": [pt.Split(Regex(r"\p{N}{1,3}"), "isolated"),
                        pt.Split(Regex("[一-龥\u3040-ゟ゠-ヿ]+"), "isolated"),
                        pt.Split(Regex("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
                                       "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"), "isolated"),
                        bl],
    }


@pytest.fixture(scope="session")
def small_bpe(shakespeare_path, session_tmp):
    """A small byte-level BPE model trained by HF (the pre-tokenizer is swapped per test)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(shakespeare_path)], trainer)
    path = session_tmp / "small-bpe.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize("variant", list(split_variants()))
def test_split_behaviors_match_hf(variant, small_bpe, tandem, shakespeare_path, tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers
    tok = Tokenizer.from_file(str(small_bpe))
    tok.pre_tokenizer = pre_tokenizers.Sequence(split_variants()[variant])
    tok.save(str(tmp_path / "tokenizer.json"))
    text = TRICKY + BOS + TRICKY[::-1] + shakespeare_path.read_text(encoding="utf-8")[:50_000] + EOS + TRICKY
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    ours = tandem_ids(tandem, tmp_path / "tokenizer.json", tmp_path / "text.txt")
    expected = tok.encode(text, add_special_tokens=False).ids
    assert ours == expected, first_difference(ours, expected)


def test_unsupported_split_is_named(tandem, small_bpe, tmp_path):
    j = json.loads(small_bpe.read_text(encoding="utf-8"))
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s"}, "behavior": "Sideways", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (tmp_path / "tokenizer.json").write_text(json.dumps(j), encoding="utf-8")
    r = tandem.run("tokenize", "--tokenizer", tmp_path / "tokenizer.json", "--text", "hi")
    assert r.returncode != 0 and "pre_tokenizer.pretokenizers[0].behavior" in r.stderr and "Sideways" in r.stderr
    j["pre_tokenizer"]["pretokenizers"][0].update(behavior="Isolated", pattern={"Regex": "(unclosed"})
    (tmp_path / "tokenizer.json").write_text(json.dumps(j), encoding="utf-8")
    r = tandem.run("tokenize", "--tokenizer", tmp_path / "tokenizer.json", "--text", "hi")
    assert r.returncode != 0 and "pre_tokenizer.pretokenizers[0]" in r.stderr and "(unclosed" in r.stderr
