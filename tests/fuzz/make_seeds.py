"""Writes the seed corpora (tests/fuzz/corpus/<target>/seed-*) and fixtures (tests/fuzz/data/) from
real, valid files: HF tokenizers, safetensors and transformers write theirs; a tiny `tandem prepare`
+ `tandem train` run supplies token shards, checkpoint manifests and trainer states.

  TANDEM_BIN=build/tandem .venv/bin/python tests/fuzz/make_seeds.py

Crashers found by fuzzing live beside the seeds (crash-*) and are never rewritten here."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import DeepseekV3Config, GPT2Config

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "tests" / "fuzz"
TEXT = (ROOT / "data" / "tinyshakespeare.txt").read_text()[:6000] + "\nCafé 日本語 😀 x=42; if (a<b) {return 3.14;}\n"
sys.path.insert(0, str(ROOT / "scripts"))
from gguf_to_tokenizer_json import SPLIT_PRE_TOKENIZERS  # noqa: E402  DeepSeek's real pre-tokenizer regexes

DEEPSEEK_SPLITS = SPLIT_PRE_TOKENIZERS["deepseek-llm"]


def seed(target, name, data):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


def bpe(pre_tokenizer, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]))
    return tok.to_str()


def main():
    tandem = os.environ.get("TANDEM_BIN", str(ROOT / "build" / "tandem"))
    (FUZZ / "data").mkdir(exist_ok=True)

    # tokenizer.json: GPT-2's ByteLevel and DeepSeek's Sequence of Splits, written by HF tokenizers.
    gpt2 = bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), 400)
    deepseek = bpe(pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), "isolated") for r in DEEPSEEK_SPLITS]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), 400)
    (FUZZ / "data" / "gpt2-bpe.tokenizer.json").write_text(gpt2)
    (FUZZ / "data" / "deepseek-bpe.tokenizer.json").write_text(deepseek)
    seed("tokenizer_json", "gpt2-bpe", bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), 280))
    seed("tokenizer_json", "deepseek-bpe", bpe(pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), "isolated") for r in DEEPSEEK_SPLITS[:1] + DEEPSEEK_SPLITS[3:]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), 270))

    # Byte-level BPE inputs: text, code, scripts, and invalid UTF-8.
    for name, text in [("english", TEXT[:300]), ("unicode", "Ünïcödé 日本語 한국어 😀👍🏽 ١٢٣ \u200b\t\r\n"),
                       ("code", "def f(x):\n    return x**2  # 42\n\n\tint main() { return 0; }\n"),
                       ("special", "a<|endoftext|>b <|endoftext|>")]:
        seed("bpe_encode", name, text)
    seed("bpe_encode", "invalid-utf8", b"ok \xc3\x28 \xe2\x82 \xff\xfe \xf0\x9f\x98")

    # safetensors, written by the safetensors library.
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.safetensors"
        save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3, dtype=torch.bfloat16),
                   "h": torch.tensor([1.5, -2.0], dtype=torch.float16), "ids": torch.tensor([1, 2, 3], dtype=torch.int64),
                   "i": torch.tensor([[7]], dtype=torch.int32), "e": torch.zeros(0, 4)}, str(p), metadata={"format": "pt"})
        seed("safetensors", "mixed", p.read_bytes())
        save_file({"transformer.wte.weight": torch.randn(4, 2)}, str(p))
        seed("safetensors", "one", p.read_bytes())

    # HF config.json, written by transformers.
    seed("hf_config", "gpt2", GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4).to_json_string())
    seed("hf_config", "deepseek-v3", DeepseekV3Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, n_group=2,
        topk_group=1, num_nextn_predict_layers=1, max_position_embeddings=64).to_json_string())

    # A real tiny run: token shards, a checkpoint's manifest and trainer state.
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "t.txt").write_text(TEXT[:2000])
        run = lambda *a: subprocess.run([tandem, *a], check=True, capture_output=True)
        run("prepare", "--input", str(tmp / "t.txt"), "--tokenizer", "char", "--out", str(tmp / "d"))
        run("prepare", "--input", str(tmp / "t.txt"), "--tokenizer", "bpe:300", "--out", str(tmp / "b"))
        seed("token_shard", "char-val", (tmp / "d" / "val.bin").read_bytes())
        seed("token_shard", "bpe-val", (tmp / "b" / "val.bin").read_bytes())
        seed("tokenizer_json", "tandem-char", (tmp / "d" / "tokenizer.json").read_bytes())
        run("train", "--config", "baby-gpt", "--data", str(tmp / "d"), "--out", str(tmp / "r"), "--steps", "2",
            "--checkpoint-every", "2", "--set", "n_layer=1", "--set", "n_embd=16", "--set", "n_head=2",
            "--set", "block_size=16", "--set", "batch_size=2", "--set", "eval_interval=100", "--set", "eval_steps=1")
        ck = tmp / "r" / "checkpoints" / "step_2"
        manifest = json.loads((ck / "manifest.json").read_text())
        (FUZZ / "data" / "checkpoint-config.json").write_bytes((ck / "config.json").read_bytes())
        seed("checkpoint_manifest", "full", (ck / "manifest.json").read_bytes())  # lists files absent there
        only = dict(manifest, files={"config.json": manifest["files"]["config.json"]})
        seed("checkpoint_manifest", "config-only", json.dumps(only, indent=2))
        seed("trainer_state", "step2", (ck / "trainer_state.json").read_bytes())
        seed("hf_config", "tandem-gpt2", (ck / "config.json").read_bytes())

    # Trainer configs: the presets' shape, and --set lines as users type them.
    seed("train_config", "baby-gpt", json.dumps({"model_type": "gpt2", "n_layer": 4, "n_head": 4, "n_embd": 128,
         "n_positions": 64, "block_size": 64, "batch_size": 12, "learning_rate": 1e-3, "max_steps": 2000}))
    seed("train_config", "ds-tiny", json.dumps({"model_type": "deepseek_v3", "hidden_size": 128, "num_hidden_layers": 4,
         "q_lora_rank": 64, "n_routed_experts": 8, "num_experts_per_tok": 2, "mtp_loss_weight": 0.3,
         "precision": "bf16", "guard": False, "guard_window": 20}))
    seed("train_set", "typical", "learning_rate=3e-4\nn_layer=2\nprecision=bf16\nguard=false\nbatch_size=4")
    seed("train_set", "strings", "model_type=gpt2\nactivation_function=gelu_new\nn_inner=null")

    # OpenAI request bodies, first byte 0: /v1/completions, 1: /v1/chat/completions.
    m = "tandem-fuzz"
    for name, chat, body in [
        ("completion", 0, {"model": m, "prompt": "Once upon", "max_tokens": 8, "temperature": 0.7, "seed": 3}),
        ("completion-stream", 0, {"model": m, "prompt": ["Hi"], "stream": True, "stream_options": {"include_usage": True},
                                  "stop": ["\n", "."], "top_p": 0.9, "top_k": 5, "n": 1, "logprobs": None}),
        ("chat", 1, {"model": m, "messages": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Hello"}], "max_completion_tokens": 4}),
        ("chat-parts", 1, {"model": m, "stream": True, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]},
                                                                     {"role": "assistant"}], "tools": None, "stop": "x"}),
    ]:
        seed("openai_request", name, bytes([chat]) + json.dumps(body).encode())

    seed("chat_template", "default", json.dumps({"message": "{role}: {content}\n", "generation_prompt": "assistant:",
                                                 "stop": ["\nuser:"]}))
    seed("chat_template", "chatml", json.dumps({"message": "<|im_start|>{role}\n{content}<|im_end|>\n",
                                                "generation_prompt": "<|im_start|>assistant\n", "stop": ["<|im_end|>"]}))


if __name__ == "__main__":
    sys.exit(main())
