"""tandem's tokenizers against Hugging Face `tokenizers` and llama.cpp's GPT-2 test vectors.

a) `tandem prepare` (bpe:1024 and char) writes a tokenizer.json that HF encodes to exactly the ids
   `tandem tokenize` prints, on the whole tinyshakespeare corpus, and decodes back to the text.
b) The GPT-2 vocabulary converted from GGUF by scripts/gguf_to_tokenizer_json.py reproduces every
   line of ggml-vocab-gpt-2.gguf.out, in tandem and in HF.
c) Byte-level BPE tokenizer.json files written by HF itself load in tandem with identical ids.
d) train.bin follows docs/formats.md and holds the first 90% of the corpus' tokens.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

VECTORS = Path(__file__).resolve().parents[1] / "data" / "tokenizer-vectors"
GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def tandem_ids(tandem, tokenizer: Path, input_file: Path, *extra) -> list[int]:
    out = tandem("tokenize", "--tokenizer", tokenizer, "--input", input_file, *extra).stdout
    return [int(x) for x in out.split()]


@pytest.fixture(scope="session", params=["bpe:1024", "char"])
def prepared(request, tandem, shakespeare_path, session_tmp):
    spec = request.param
    out = session_tmp / ("prepared-" + spec.replace(":", "-"))
    tandem("prepare", "--input", shakespeare_path, "--tokenizer", spec, "--out", out)
    return spec, out


def test_prepare_tokenizer_matches_hf(prepared, tandem, shakespeare_path):
    spec, out = prepared
    text = shakespeare_path.read_text(encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    expected = hf.encode(text, add_special_tokens=False).ids
    ours = tandem_ids(tandem, out, shakespeare_path)
    assert len(ours) == len(expected)
    first_diff = next((i for i, (a, b) in enumerate(zip(ours, expected)) if a != b), None)
    assert first_diff is None, f"{spec}: first differing token at {first_diff}: tandem {ours[first_diff]} HF {expected[first_diff]}"
    assert hf.decode(expected) == text
    if spec.startswith("bpe:"):
        assert hf.get_vocab_size() == 1024


def test_tokenize_decode_round_trips(prepared, tandem, shakespeare_path, tmp_path):
    _, out = prepared
    text = shakespeare_path.read_text(encoding="utf-8")
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(" ".join(map(str, tandem_ids(tandem, out, shakespeare_path))))
    decoded = tandem("tokenize", "--tokenizer", out / "tokenizer.json", "--input", ids_file, "--decode").stdout
    assert decoded == text


def test_shard_header_and_tokens(prepared, tandem, shakespeare_path):
    _, out = prepared
    ids = tandem_ids(tandem, out, shakespeare_path)
    vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    n_train = int(len(ids) * 0.9)
    for name, expected in (("train.bin", ids[:n_train]), ("val.bin", ids[n_train:])):
        raw = (out / name).read_bytes()
        header = raw[:64]
        assert header[:8] == b"TANDEMTK"
        version, dtype, count, _checksum, vocab_size = np.frombuffer(header[8:36], dtype="<u4,<u4,<u8,<u8,<u4")[0]
        assert version == 1 and dtype == 1 and vocab_size == len(vocab)
        assert header[36:] == bytes(28)
        assert count == len(expected) and len(raw) == 64 + 2 * count
        assert np.array_equal(np.frombuffer(raw[64:], dtype="<u2"), np.asarray(expected, dtype=np.uint16))


def read_vectors():
    inp = (VECTORS / "ggml-vocab-gpt-2.gguf.inp").read_bytes().decode("utf-8")
    strings = inp.split("\n__ggml_vocab_test__\n")
    if strings and strings[-1] == "":
        strings.pop()
    lines = (VECTORS / "ggml-vocab-gpt-2.gguf.out").read_text(encoding="utf-8").split("\n")
    expected = [[int(x) for x in line.split()] for line in lines[: len(strings)]]
    assert len(strings) == len(expected) == 46
    return strings, expected


@pytest.fixture(scope="session")
def gpt2_dir(repo_root, session_tmp):
    pytest.importorskip("gguf")
    out = session_tmp / "gpt2"
    subprocess.run([sys.executable, str(repo_root / "scripts" / "gguf_to_tokenizer_json.py"),
                    str(VECTORS / "ggml-vocab-gpt-2.gguf"), str(out)], check=True)
    return out


def test_gguf_gpt2_vectors(gpt2_dir, tandem, tmp_path):
    strings, expected = read_vectors()
    hf = tokenizers.Tokenizer.from_file(str(gpt2_dir / "tokenizer.json"))
    for i, (s, want) in enumerate(zip(strings, expected)):
        f = tmp_path / f"in{i}.txt"
        f.write_bytes(s.encode("utf-8"))  # --input keeps leading dashes and newlines intact
        assert tandem_ids(tandem, gpt2_dir, f) == want, f"tandem, test string {i}: {s!r}"
        assert hf.encode(s, add_special_tokens=False).ids == want, f"HF, test string {i}: {s!r}"


def test_gguf_gpt2_bos_and_decode(gpt2_dir, tandem):
    ids = [int(x) for x in tandem("tokenize", "--tokenizer", gpt2_dir, "--text", "Hello world", "--bos").stdout.split()]
    assert ids == [50256, 15496, 995]
    assert tandem("tokenize", "--tokenizer", gpt2_dir, "--text", "15496 995 50256", "--decode").stdout == "Hello world<|endoftext|>"


@pytest.mark.parametrize("pre", ["bytelevel", "split"])
def test_hf_trained_tokenizer_loads_in_tandem(pre, tandem, shakespeare_path, tmp_path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    if pre == "split":  # the shape HF writes for regex-configured models (Split + ByteLevel)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT2_REGEX), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(shakespeare_path)], trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    text = shakespeare_path.read_text(encoding="utf-8") + "<|endoftext|>"
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    ours = tandem_ids(tandem, tmp_path / "tokenizer.json", tmp_path / "corpus.txt", "--bos")
    eot = tok.token_to_id("<|endoftext|>")
    assert ours[0] == eot  # <|endoftext|> serves as BOS, as in GPT-2
    assert ours[1:] == tok.encode(text, add_special_tokens=False).ids


def test_tokenize_errors(prepared, tandem):
    spec, out = prepared
    if spec != "char":
        pytest.skip("character tokenizer only")
    r = tandem.run("tokenize", "--tokenizer", out, "--text", "hello ☃")
    assert r.returncode != 0 and "U+2603" in r.stderr and "byte offset 6" in r.stderr
    r = tandem.run("tokenize", "--tokenizer", out, "--text", "999", "--decode")
    assert r.returncode != 0 and "999" in r.stderr


@pytest.mark.parametrize("spec", ["bpe:abc", "bpe:100", "wordpiece"])
def test_prepare_rejects_bad_spec(spec, tandem, shakespeare_path, tmp_path):
    r = tandem.run("prepare", "--input", shakespeare_path, "--tokenizer", spec, "--out", tmp_path / "d")
    assert r.returncode == 1 and spec in r.stderr


SPLIT_BEHAVIORS = ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]


@pytest.fixture(scope="module")
def merging_bpe(shakespeare_path):
    """A byte-level BPE trained without any Split, so its merges span punctuation and letters:
    a pre-tokenizer that cuts the text into characters changes the ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([shakespeare_path.read_text(encoding="utf-8")[:200_000]] + ["a.b"] * 1000, trainer)
    assert len(tok.encode("a.b").ids) == 1  # merged whole: cutting it into characters must show
    return tok.to_str()


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("behavior", SPLIT_BEHAVIORS)
def test_split_with_empty_string_pattern_matches_hf(merging_bpe, behavior, invert, tandem, tmp_path):
    """A Split pre-tokenizer whose pattern is {"String": ""}: HF tokenizers (0.23) matches the empty
    string at every character boundary, so the text is cut into characters ("a.b" -> a . b; with
    Removed + invert nothing is left). Expected ids: HF's encode of the same tokenizer.json. Exact."""
    from tokenizers import Tokenizer, pre_tokenizers
    tok = Tokenizer.from_str(merging_bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("", behavior, invert=invert),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    spec = json.loads(path.read_text())["pre_tokenizer"]["pretokenizers"][0]
    assert spec["type"] == "Split" and spec["pattern"] == {"String": ""}, spec
    hf = Tokenizer.from_file(str(path))
    pieces = [p for p, _ in hf.pre_tokenizer.pre_tokenize_str("a.b")]
    assert pieces == ([] if (behavior, invert) == ("removed", True) else ["a", ".", "b"]), pieces
    for i, text in enumerate(["a.b", "a.b, said he; the king's men.", "First Citizen:\nBefore we proceed, hear me.",
                              "中文 x\t\n  12.5%"]):
        f = tmp_path / f"in{i}.txt"
        f.write_bytes(text.encode("utf-8"))
        want = hf.encode(text, add_special_tokens=False).ids
        assert tandem_ids(tandem, path, f) == want, f"{behavior} invert={invert}: {text!r}"
