"""GGUF in and out (src/io/gguf.cpp, src/models/gguf_convert.cpp), checked against the `gguf`
package (gguf-py, llama.cpp's own Python reader/writer and numpy reference quantizer):

a) `tandem export --format gguf` for GPT-2 (llama.cpp's `gpt2`) and DeepSeek-V3 (`deepseek2`) in
   f32, bf16 and q8_0: gguf-py reads every key and tensor back, and each tensor equals what this
   file computes independently from the checkpoint's safetensors (the layouts of llama.cpp's
   convert_hf_to_gguf.py, written here in numpy; bf16 rounded by torch; q8_0 by gguf-py's
   quantizer, which is llama.cpp's reference quantizer), byte for byte.
b) GGUF -> tandem import -> GGUF export is bit-identical (f32, bf16, q8_0).
c) Files written by gguf-py (not by tandem) import, F32/F16/BF16/Q8_0, into the values gguf-py
   dequantizes them to; the imported model evaluates to the original's loss.
d) Unsupported architectures, tensor types, missing keys and truncated files are refused, naming
   the key or tensor.
e) tandem's logits on an imported q8_0 file equal a float64 forward of llama.cpp's graph on the
   file's weights (bench/ggml_reference.py), both architectures.
About 40 s (two short training runs, a dozen exports and imports).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[2]
MT = gguf.MODEL_TENSOR
Q8 = gguf.GGMLQuantizationType.Q8_0


@pytest.fixture(scope="module")
def runs(tandem, shakespeare_path, tmp_path_factory):
    """A BPE tokenizer on a Shakespeare slice, and two short runs: a small GPT-2 and ds-tiny (its
    MTP module included, which GGUF leaves out)."""
    root = tmp_path_factory.mktemp("gguf")
    src = root / "slice.txt"
    src.write_text(shakespeare_path.read_text(encoding="utf-8")[:40000], encoding="utf-8")
    tandem("prepare", "--input", src, "--tokenizer", "bpe:320", "--out", root / "data")
    common = ["--data", root / "data", "--steps", "2", "--checkpoint-every", "2", "--seed", "3",
              "--set", "eval_interval=2", "--set", "eval_steps=1"]
    # vocab_size above the tokenizer's 320: the extra embedding rows become [PADn] tokens of type unused
    tandem("train", "--config", "baby-gpt", "--out", root / "gpt2", "--set", "n_layer=2", "--set", "n_embd=64",
           "--set", "vocab_size=352", *common)
    tandem("train", "--config", "ds-tiny", "--out", root / "ds", *common)
    return {"root": root, "gpt2": root / "gpt2" / "checkpoints" / "step_2", "ds": root / "ds" / "checkpoints" / "step_2"}


# --- the expected file, computed independently ------------------------------------------------

def gpt2_expected(ckpt: Path) -> tuple[dict, dict]:
    cfg = json.loads((ckpt / "config.json").read_text())
    t = load_file(str(ckpt / "model.safetensors"))
    name = lambda kind, bid=None: gguf.TENSOR_NAMES[kind].format(bid=bid)  # noqa: E731
    C = cfg["n_embd"]
    keys = {"general.architecture": "gpt2", "gpt2.context_length": cfg["n_positions"], "gpt2.embedding_length": C,
            "gpt2.feed_forward_length": 4 * C, "gpt2.block_count": cfg["n_layer"],
            "gpt2.attention.head_count": cfg["n_head"],
            "gpt2.attention.layer_norm_epsilon": np.float32(cfg["layer_norm_epsilon"])}
    out = {name(MT.TOKEN_EMBD) + ".weight": t["transformer.wte.weight"],
           name(MT.POS_EMBD) + ".weight": t["transformer.wpe.weight"]}
    for l in range(cfg["n_layer"]):
        h = f"transformer.h.{l}."
        for kind, src, transpose in [(MT.ATTN_NORM, "ln_1", False), (MT.ATTN_QKV, "attn.c_attn", True),
                                     (MT.ATTN_OUT, "attn.c_proj", True), (MT.FFN_NORM, "ln_2", False),
                                     (MT.FFN_UP, "mlp.c_fc", True), (MT.FFN_DOWN, "mlp.c_proj", True)]:
            w = t[h + src + ".weight"]
            out[name(kind, l) + ".weight"] = w.T if transpose else w
            out[name(kind, l) + ".bias"] = t[h + src + ".bias"]
    out[name(MT.OUTPUT_NORM) + ".weight"] = t["transformer.ln_f.weight"]
    out[name(MT.OUTPUT_NORM) + ".bias"] = t["transformer.ln_f.bias"]
    out[name(MT.OUTPUT) + ".weight"] = t["transformer.wte.weight"]
    return keys, out


def deepseek2_expected(ckpt: Path) -> tuple[dict, dict]:
    """llama.cpp's DeepseekV2Model conversion: kv_b split into k_b (transposed per head) and v_b,
    experts stacked, MTP layers dropped, sigmoid gating, grouped routing."""
    c = json.loads((ckpt / "config.json").read_text())
    t = load_file(str(ckpt / "model.safetensors"))
    a = "deepseek2."
    nope, rope, vd, nh = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["num_attention_heads"]
    keys = {"general.architecture": "deepseek2", a + "block_count": c["num_hidden_layers"],
            a + "context_length": c["max_position_embeddings"], a + "embedding_length": c["hidden_size"],
            a + "feed_forward_length": c["intermediate_size"], a + "attention.head_count": nh,
            a + "attention.head_count_kv": 1, a + "attention.q_lora_rank": c["q_lora_rank"],
            a + "attention.kv_lora_rank": c["kv_lora_rank"],
            a + "attention.key_length": c["kv_lora_rank"] + rope, a + "attention.value_length": c["kv_lora_rank"],
            a + "attention.key_length_mla": nope + rope, a + "attention.value_length_mla": vd,
            a + "rope.dimension_count": rope, a + "leading_dense_block_count": c["first_k_dense_replace"],
            a + "expert_feed_forward_length": c["moe_intermediate_size"], a + "expert_count": c["n_routed_experts"],
            a + "expert_used_count": c["num_experts_per_tok"], a + "expert_shared_count": c["n_shared_experts"],
            a + "expert_group_count": c["n_group"], a + "expert_group_used_count": c["topk_group"],
            a + "expert_weights_scale": np.float32(c["routed_scaling_factor"]),
            a + "expert_weights_norm": c["norm_topk_prob"], a + "expert_gating_func": 2,
            a + "attention.layer_norm_rms_epsilon": np.float32(c["rms_norm_eps"]),
            a + "rope.freq_base": np.float32(c["rope_parameters"]["rope_theta"]), a + "vocab_size": c["vocab_size"]}
    n = lambda kind, bid=None: gguf.TENSOR_NAMES[kind].format(bid=bid) + ".weight"  # noqa: E731
    out = {n(MT.TOKEN_EMBD): t["model.embed_tokens.weight"]}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out[n(MT.ATTN_NORM, l)] = t[p + "input_layernorm.weight"]
        out[n(MT.ATTN_Q_A, l)] = t[p + "self_attn.q_a_proj.weight"]
        out[n(MT.ATTN_Q_A_NORM, l)] = t[p + "self_attn.q_a_layernorm.weight"]
        out[n(MT.ATTN_Q_B, l)] = t[p + "self_attn.q_b_proj.weight"]
        out[n(MT.ATTN_KV_A_MQA, l)] = t[p + "self_attn.kv_a_proj_with_mqa.weight"]
        out[n(MT.ATTN_KV_A_NORM, l)] = t[p + "self_attn.kv_a_layernorm.weight"]
        kv_b = t[p + "self_attn.kv_b_proj.weight"].reshape(nh, nope + vd, -1)
        out[n(MT.ATTN_K_B, l)] = kv_b[:, :nope].transpose(0, 2, 1)
        out[n(MT.ATTN_V_B, l)] = kv_b[:, nope:]
        out[n(MT.ATTN_OUT, l)] = t[p + "self_attn.o_proj.weight"]
        out[n(MT.FFN_NORM, l)] = t[p + "post_attention_layernorm.weight"]
        if l < c["first_k_dense_replace"]:
            for kind, s in [(MT.FFN_GATE, "gate"), (MT.FFN_UP, "up"), (MT.FFN_DOWN, "down")]:
                out[n(kind, l)] = t[p + f"mlp.{s}_proj.weight"]
            continue
        out[n(MT.FFN_GATE_INP, l)] = t[p + "mlp.gate.weight"]
        out[gguf.TENSOR_NAMES[MT.FFN_EXP_PROBS_B].format(bid=l) + ".bias"] = t[p + "mlp.gate.e_score_correction_bias"]
        for kind, s in [(MT.FFN_GATE_EXP, "gate"), (MT.FFN_UP_EXP, "up"), (MT.FFN_DOWN_EXP, "down")]:
            out[n(kind, l)] = np.stack([t[p + f"mlp.experts.{e}.{s}_proj.weight"] for e in range(c["n_routed_experts"])])
        for kind, s in [(MT.FFN_GATE_SHEXP, "gate"), (MT.FFN_UP_SHEXP, "up"), (MT.FFN_DOWN_SHEXP, "down")]:
            out[n(kind, l)] = t[p + f"mlp.shared_experts.{s}_proj.weight"]
    out[n(MT.OUTPUT_NORM)] = t["model.norm.weight"]
    out[n(MT.OUTPUT)] = t["lm_head.weight"]
    return keys, out


def expected_type(name: str, arr: np.ndarray, dtype: str) -> gguf.GGMLQuantizationType:
    """llama.cpp's converter: 1-D tensors, biases, the router and GPT-2's position embedding stay
    F32; q8_0 rows must be whole blocks (tandem falls back to F32 where llama.cpp picks F16)."""
    f32 = gguf.GGMLQuantizationType.F32
    if dtype == "f32" or arr.ndim < 2 or not name.endswith(".weight") or "ffn_gate_inp" in name or name.startswith("position_embd"):
        return f32
    if dtype == "bf16":
        return gguf.GGMLQuantizationType.BF16
    return Q8 if arr.shape[-1] % 32 == 0 else f32


def expected_bytes(arr: np.ndarray, qtype) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return arr.tobytes()
    if qtype == gguf.GGMLQuantizationType.BF16:
        return torch.from_numpy(arr).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    return gguf.quants.quantize(arr, qtype).tobytes()


EXPECTED = {"gpt2": gpt2_expected, "ds": deepseek2_expected}


@pytest.mark.parametrize("arch", ["gpt2", "ds"])
@pytest.mark.parametrize("dtype", ["f32", "bf16", "q8_0"])
def test_export_read_back_by_gguf_package(tandem, runs, arch, dtype):
    ckpt, out = runs[arch], runs["root"] / f"{arch}_{dtype}.gguf"
    tandem("export", "--model", ckpt, "--format", "gguf", "--dtype", dtype, "--out", out)
    r = gguf.GGUFReader(str(out))
    keys, tensors = EXPECTED[arch](ckpt)
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    for k, want in keys.items():
        assert k in fields, f"missing key {k}"
        got = fields[k].contents()
        assert got == want and type(want)(got) == want, f"{k}: {got!r} != {want!r}"
    assert fields["general.file_type"].contents() == {"f32": 0, "bf16": 32, "q8_0": 7}[dtype]

    # The tokenizer: tandem's tokenizer.json vocabulary and merges, GPT-2 pre-tokenization.
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert tokens[:len(vocab)] == [s for s, _ in vocab]
    n_vocab = tensors["token_embd.weight"].shape[0]
    assert len(tokens) == n_vocab and tokens[len(vocab):] == [f"[PAD{i}]" for i in range(len(vocab), n_vocab)]
    assert fields["tokenizer.ggml.token_type"].contents() == [1] * len(vocab) + [5] * (n_vocab - len(vocab))
    assert fields["tokenizer.ggml.merges"].contents() == [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    extra = set(fields) - set(keys) - {"general.file_type", "general.quantization_version"} - \
        {k for k in fields if k.startswith("tokenizer.ggml.")}
    assert not extra, f"keys not checked: {extra}"

    got = {t.name: t for t in r.tensors}
    assert list(got) == list(tensors), "tensor names or order differ"
    for name, arr in tensors.items():
        t = got[name]
        qtype = expected_type(name, arr, dtype)
        assert t.tensor_type == qtype, f"{name}: {t.tensor_type.name}, expected {qtype.name}"
        assert list(reversed(t.shape.tolist())) == list(arr.shape), f"{name}: shape {t.shape} vs {arr.shape}"
        assert bytes(t.data.tobytes()) == expected_bytes(arr, qtype), f"{name}: bytes differ ({qtype.name})"


@pytest.mark.parametrize("arch", ["gpt2", "ds"])
@pytest.mark.parametrize("dtype", ["f32", "bf16", "q8_0"])
def test_round_trip_bit_identical(tandem, runs, arch, dtype):
    root = runs["root"] / f"rt_{arch}_{dtype}"
    first, second = root / "a.gguf", root / "b.gguf"
    root.mkdir()
    tandem("export", "--model", runs[arch], "--format", "gguf", "--dtype", dtype, "--out", first)
    tandem("import", "--from", first, "--out", root / "model")
    tandem("export", "--model", root / "model", "--format", "gguf", "--dtype", dtype, "--out", second)
    assert first.read_bytes() == second.read_bytes()
    if dtype == "f32":  # the imported model holds the original weights exactly (MTP left out)
        orig, imp = load_file(str(runs[arch] / "model.safetensors")), load_file(str(root / "model" / "model.safetensors"))
        mtp = {k for k in orig if arch == "ds" and k.startswith("model.layers.") and int(k.split(".")[2]) >= 4}
        assert set(imp) == set(orig) - mtp
        for k, v in imp.items():
            assert np.array_equal(v, orig[k]), k
        assert json.loads((root / "model" / "tokenizer.json").read_text())["model"] == \
            json.loads((runs[arch] / "tokenizer.json").read_text())["model"]


def write_with_gguf_package(arch: str, ckpt: Path, out: Path, qtype) -> dict[str, np.ndarray]:
    """A GGUF file written by gguf-py alone; returns the values each tensor dequantizes to."""
    keys, tensors = EXPECTED[arch](ckpt)
    w = gguf.GGUFWriter(str(out), keys.pop("general.architecture"))
    for k, v in keys.items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, np.float32):
            w.add_float32(k, float(v))
        else:
            w.add_uint32(k, int(v))
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    vocab = [s for s, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(vocab)
    w.add_token_types([gguf.TokenType.NORMAL] * len(vocab))
    w.add_token_merges(tok["model"]["merges"])
    values = {}
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        q = qtype if arr.ndim >= 2 and arr.shape[-1] % 32 == 0 else gguf.GGMLQuantizationType.F32
        if q == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
            values[name] = arr.astype(np.float16).astype(np.float32)
        elif q == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr)
            values[name] = arr
        else:
            data = gguf.quants.quantize(arr, q)
            w.add_tensor(name, data, raw_dtype=q)
            values[name] = gguf.quants.dequantize(data, q).reshape(arr.shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return values


@pytest.mark.parametrize("arch", ["gpt2", "ds"])
@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0"])
def test_import_file_written_by_gguf_package(tandem, runs, arch, qtype):
    root = runs["root"] / f"py_{arch}_{qtype}"
    root.mkdir()
    values = write_with_gguf_package(arch, runs[arch], root / "m.gguf", gguf.GGMLQuantizationType[qtype])
    tandem("import", "--from", root / "m.gguf", "--out", root / "model")
    # Export the imported model as f32 GGUF and compare with the values gguf-py decodes to.
    tandem("export", "--model", root / "model", "--format", "gguf", "--out", root / "back.gguf")
    back = {t.name: np.asarray(t.data).reshape(list(reversed(t.shape.tolist()))) for t in gguf.GGUFReader(str(root / "back.gguf")).tensors}
    assert set(back) == set(values)
    for name, v in values.items():
        assert np.array_equal(back[name], v), f"{name} ({qtype})"
    if arch == "gpt2" and qtype == "F32":  # the imported model is the original: same validation loss
        def loss(model):
            out = tandem("eval", "--model", model, "--data", runs["root"] / "data", "--max-batches", "2").stdout
            return out
        assert loss(root / "model").split("loss")[1] == loss(runs[arch]).split("loss")[1]


@pytest.mark.parametrize("arch", ["gpt2", "ds"])
def test_logits_equal_float64_forward_of_the_file(tandem, runs, arch, tmp_path):
    """tandem on an imported q8_0 GGUF computes what llama.cpp's graph computes on the file's
    weights: an independent float64 forward of the file (bench/ggml_reference.py: llama.cpp's gpt2
    and deepseek2 graphs on the tensors gguf-py dequantizes, f32 activations) gives its logits.
    Checks the mapping's semantics (k_b/v_b, expert stacks, grouped sigmoid routing, adjacent-pair
    rope) where CI has no llama.cpp."""
    sys.path.insert(0, str(REPO / "bench"))
    from ggml_reference import Reference
    from safetensors.numpy import save_file
    out = tmp_path / "m.gguf"
    tandem("export", "--model", runs[arch], "--format", "gguf", "--dtype", "q8_0", "--out", out)
    tandem("import", "--from", out, "--out", tmp_path / "model")
    ids = np.random.default_rng(5).integers(0, 320, size=(1, 40), dtype=np.int32)
    save_file({"input_ids": ids, "labels": np.roll(ids, -1, axis=1)}, str(tmp_path / "batch.safetensors"))
    tandem("grad", "--model", tmp_path / "model", "--batch", tmp_path / "batch.safetensors", "--out", tmp_path / "g.safetensors")
    ours = load_file(str(tmp_path / "g.safetensors"))["logits"].reshape(40, -1).astype(np.float64)
    want = Reference(out, "exact").forward(ids[0])
    assert ours.shape == want.shape
    err = np.max(np.abs(ours - want)) / np.max(np.abs(want))
    assert err < 1e-5, f"{arch}: max rel err {err:.2e} against the float64 forward of the GGUF"


def test_import_via_bench_helper(tandem, runs, tmp_path):
    """bench/gpt2_to_gguf.py (gguf-py, its own placeholder vocabulary) imports."""
    subprocess.run([sys.executable, str(REPO / "bench" / "gpt2_to_gguf.py"), str(runs["gpt2"]), str(tmp_path / "b.gguf")],
                   check=True, capture_output=True)
    tandem("import", "--from", tmp_path / "b.gguf", "--out", tmp_path / "model")
    orig, imp = load_file(str(runs["gpt2"] / "model.safetensors")), load_file(str(tmp_path / "model" / "model.safetensors"))
    assert set(imp) == set(orig) and all(np.array_equal(imp[k], orig[k]) for k in imp)


def test_refusals_name_the_culprit(tandem, runs, tmp_path):
    good = tmp_path / "good.gguf"
    tandem("export", "--model", runs["gpt2"], "--format", "gguf", "--out", good)
    r = gguf.GGUFReader(str(good))

    def rewrite(path, arch="gpt2", drop_key=None, retype=None):
        w = gguf.GGUFWriter(str(path), arch)
        for k, f in r.fields.items():
            if k.startswith("GGUF.") or k == "general.architecture" or k == drop_key:
                continue
            vt = f.types[0]
            if vt == gguf.GGUFValueType.ARRAY:
                w.add_key_value(k.replace("gpt2.", arch + "."), f.contents(), vt, sub_type=f.types[-1])
            else:
                w.add_key_value(k.replace("gpt2.", arch + "."), f.contents(), vt)
        for t in r.tensors:
            arr = np.asarray(t.data).reshape(list(reversed(t.shape.tolist())))
            if t.name == retype:
                w.add_tensor(t.name, gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q4_0),
                             raw_dtype=gguf.GGMLQuantizationType.Q4_0)
            else:
                w.add_tensor(t.name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    cases = [("arch.gguf", dict(arch="llama"), "general.architecture' = 'llama'"),
             ("key.gguf", dict(drop_key="gpt2.block_count"), "missing key 'gpt2.block_count'"),
             ("type.gguf", dict(retype="blk.0.ffn_up.weight"), "tensor 'blk.0.ffn_up.weight': ggml type 2")]
    for name, kw, message in cases:
        rewrite(tmp_path / name, **kw)
        res = tandem.run("import", "--from", tmp_path / name, "--out", tmp_path / (name + ".out"))
        assert res.returncode != 0 and message in res.stderr, res.describe()
    data = good.read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(data[:-100])
    res = tandem.run("import", "--from", tmp_path / "trunc.gguf", "--out", tmp_path / "trunc.out")
    assert res.returncode != 0 and "output.weight' (" in res.stderr and "truncated" in res.stderr, res.describe()
    (tmp_path / "hdr.gguf").write_bytes(data[:2000])  # inside the vocabulary
    res = tandem.run("import", "--from", tmp_path / "hdr.gguf", "--out", tmp_path / "hdr.out")
    assert res.returncode != 0 and "truncated header while reading key 'tokenizer.ggml." in res.stderr, res.describe()
    (tmp_path / "short.gguf").write_bytes(data[:200])  # counts larger than the file can hold
    res = tandem.run("import", "--from", tmp_path / "short.gguf", "--out", tmp_path / "short.out")
    assert res.returncode != 0 and "corrupt header" in res.stderr, res.describe()


def test_deepseek_yarn_keys_round_trip(tandem, runs, tmp_path):
    """YaRN: llama.cpp's rope.scaling.* keys (yarn_log_multiplier = 0.1 * mscale_all_dim), and back."""
    import shutil
    src = tmp_path / "yarn"
    src.mkdir()
    for f in ("model.safetensors", "tokenizer.json"):
        shutil.copy(runs["ds"] / f, src / f)
    cfg = json.loads((runs["ds"] / "config.json").read_text())
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16,
            "mscale": 0.5, "mscale_all_dim": 0.5, "beta_fast": 16.0, "beta_slow": 2.0}
    cfg["rope_parameters"] = yarn
    (src / "config.json").write_text(json.dumps(cfg))
    tandem("export", "--model", src, "--format", "gguf", "--out", tmp_path / "y.gguf")
    f = {k: v.contents() for k, v in gguf.GGUFReader(str(tmp_path / "y.gguf")).fields.items()}
    a = "deepseek2.rope.scaling."
    assert f[a + "type"] == "yarn" and f[a + "factor"] == 4.0 and f[a + "original_context_length"] == 16
    assert f[a + "yarn_log_multiplier"] == np.float32(0.05)
    assert (f[a + "yarn_beta_fast"], f[a + "yarn_beta_slow"]) == (16.0, 2.0)
    tandem("import", "--from", tmp_path / "y.gguf", "--out", tmp_path / "back")
    back = json.loads((tmp_path / "back" / "config.json").read_text())["rope_parameters"]
    assert {k: pytest.approx(v) if isinstance(v, float) else v for k, v in yarn.items()} == back
    # mscale != mscale_all_dim has no llama.cpp key: refused, naming both.
    cfg["rope_parameters"] = dict(yarn, mscale=1.0)
    (src / "config.json").write_text(json.dumps(cfg))
    r = tandem.run("export", "--model", src, "--format", "gguf", "--out", tmp_path / "z.gguf")
    assert r.returncode != 0 and "mscale" in r.stderr and "mscale_all_dim" in r.stderr, r.describe()


def test_character_tokenizer_exports_as_bpe_without_merges(tandem, shakespeare_path, tmp_path):
    """README command one's char-level baby-gpt exports: each ASCII character is one byte-level
    token (no merges), and the model imported back encodes the corpus to the same ids."""
    text = shakespeare_path.read_text(encoding="utf-8")[:20000]
    (tmp_path / "s.txt").write_text(text, encoding="utf-8")
    tandem("prepare", "--input", tmp_path / "s.txt", "--tokenizer", "char", "--out", tmp_path / "data")
    tandem("train", "--config", "baby-gpt", "--data", tmp_path / "data", "--out", tmp_path / "run", "--steps", "1",
           "--set", "n_layer=1", "--set", "n_embd=32", "--set", "eval_steps=1")
    tandem("export", "--model", tmp_path / "run", "--format", "gguf", "--out", tmp_path / "c.gguf")
    f = {k: v.contents() for k, v in gguf.GGUFReader(str(tmp_path / "c.gguf")).fields.items()}
    chars = sorted(set(text))
    byte_level = {" ": "Ġ", "\n": "Ċ"}
    assert f["tokenizer.ggml.tokens"][:len(chars)] == [byte_level.get(c, c) for c in chars]
    assert f["tokenizer.ggml.merges"] == []
    tandem("import", "--from", tmp_path / "c.gguf", "--out", tmp_path / "back")
    ids = lambda tok: tandem("tokenize", "--tokenizer", tok, "--input", tmp_path / "s.txt").stdout  # noqa: E731
    assert ids(tmp_path / "back") == ids(tmp_path / "data")
