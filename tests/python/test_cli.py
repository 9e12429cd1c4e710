"""End-to-end CLI behaviour: exact resume, and bad input rejected with one clear error line,
a non-zero exit code and nothing overwritten."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

SMALL = ["--set", "n_layer=2", "--set", "n_embd=64", "--set", "n_head=4", "--set", "eval_interval=20",
         "--set", "eval_steps=2"]


@pytest.fixture(scope="module")
def char_data(tandem, session_tmp, shakespeare_path) -> Path:
    out = session_tmp / "cli-char"
    if not (out / "val.bin").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", out)
    return out


@pytest.fixture(scope="module")
def trained_run(tandem, session_tmp, char_data) -> Path:
    run = session_tmp / "cli-run"
    if not (run / "checkpoints").exists():
        tandem("train", "--config", "baby-gpt", "--data", char_data, "--out", run, "--steps", "10", *SMALL)
    return run


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): digest(p) for p in sorted(path.rglob("*")) if p.is_file()}


def assert_one_error(r, *needles: str) -> None:
    assert r.returncode != 0, r.describe()
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("tandem: error:")]
    assert len(errors) == 1, r.describe()
    for n in needles:
        assert n in errors[0], f"{n!r} not in the error line\n{r.describe()}"


def test_resume_is_bit_identical(tandem, tmp_path, char_data):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["--config", "baby-gpt", "--data", char_data, "--set", "eval_interval=25", "--set", "eval_steps=2"]
    tandem("train", *args, "--out", straight, "--steps", "60")
    tandem("train", *args, "--out", split, "--steps", "30", "--checkpoint-every", "10")
    r = tandem("train", *args, "--out", split, "--steps", "60", "--resume")
    assert "resuming from" in r.stderr and "step_30" in r.stderr, r.describe()
    a = straight / "checkpoints" / "step_60"
    b = split / "checkpoints" / "step_60"
    assert digest(a / "model.safetensors") == digest(b / "model.safetensors")
    assert digest(a / "optimizer.safetensors") == digest(b / "optimizer.safetensors")
    # The resumed run's metrics continue the first part's: one line per step, same losses.
    ma = [json.loads(l) for l in (straight / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (split / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in mb] == list(range(1, 61))
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]


def test_metrics_and_checkpoint_layout(trained_run):
    metrics = [json.loads(l) for l in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 10
    for m in metrics:
        for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s"):
            assert key in m, m
    assert "val_loss" in metrics[-1]
    ck = trained_run / "checkpoints" / "step_10"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors",
              "trainer_state.json", "manifest.json"):
        assert (ck / f).is_file(), f
    assert json.loads((ck / "config.json").read_text())["model_type"] == "gpt2"


def test_generate_and_eval(tandem, trained_run, char_data):
    a = tandem("generate", "--model", trained_run, "--prompt", "ROMEO:", "--max-tokens", "40", "--seed", "3")
    b = tandem("generate", "--model", trained_run, "--prompt", "ROMEO:", "--max-tokens", "40", "--seed", "3")
    assert a.stdout == b.stdout and len(a.stdout.rstrip("\n")) == 40
    g = tandem("generate", "--model", trained_run, "--prompt", "ROMEO:", "--max-tokens", "20", "--temperature", "0")
    assert len(g.stdout.rstrip("\n")) == 20
    # --stats: the same text, plus one JSON line of timings on stderr.
    st = tandem("generate", "--model", trained_run, "--prompt", "ROMEO:", "--max-tokens", "20", "--temperature", "0",
                "--stats")
    assert st.stdout == g.stdout
    stats = json.loads(st.stderr.strip().splitlines()[-1])
    assert stats["prompt_tokens"] == 6 and stats["generated_tokens"] == 20
    assert stats["prefill_s"] > 0 and stats["decode_s"] > 0
    assert abs(stats["decode_tokens_per_s"] - 19 / stats["decode_s"]) < 1e-6 * stats["decode_tokens_per_s"]
    e = tandem("eval", "--model", trained_run, "--data", char_data, "--max-batches", "2")
    assert "val_loss" in e.stdout and "perplexity" in e.stdout


def test_help_for_every_command(tandem):
    for cmd in ("prepare", "tokenize", "train", "generate", "eval", "grad"):
        r = tandem(cmd, "--help")
        assert "--" in r.stdout, cmd


def test_unknown_flag(tandem, tmp_path, char_data):
    r = tandem.run("train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "r", "--bogus", "1")
    assert_one_error(r, "--bogus")
    assert not (tmp_path / "r").exists()


def test_unknown_config_key(tandem, tmp_path, char_data):
    r = tandem.run("train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "r", "--set", "n_layers=3")
    assert_one_error(r, "unknown config key 'n_layers'")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "dropout": 0.1}))
    r = tandem.run("train", "--config", cfg, "--data", char_data, "--out", tmp_path / "r")
    assert_one_error(r, "unknown config key 'dropout'", str(cfg))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["missing", "truncated", "bitflip", "badmagic"])
def test_bad_shard(tandem, tmp_path, char_data, damage):
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    shard = data / "train.bin"
    raw = bytearray(shard.read_bytes())
    if damage == "missing":
        shard.unlink()
    elif damage == "truncated":
        shard.write_bytes(raw[: len(raw) - 1000])
    elif damage == "bitflip":
        raw[64 + 5000] ^= 0x01
        shard.write_bytes(raw)
    else:
        raw[0:8] = b"NOTTOKEN"
        shard.write_bytes(raw)
    r = tandem.run("train", "--config", "baby-gpt", "--data", data, "--out", tmp_path / "r", "--steps", "1")
    needle = {"missing": "train.bin", "truncated": "train.bin", "bitflip": "checksum", "badmagic": "magic"}[damage]
    assert_one_error(r, needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["truncated", "bitflip"])
def test_bad_checkpoint(tandem, tmp_path, trained_run, char_data, damage):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    weights = run / "checkpoints" / "step_10" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    if damage == "truncated":
        weights.write_bytes(raw[: len(raw) // 2])
    else:
        raw[-100] ^= 0x10
        weights.write_bytes(raw)
    before = tree_digest(run)
    for args in (["generate", "--model", run, "--prompt", "ROMEO:"],
                 ["eval", "--model", run, "--data", char_data],
                 ["train", "--config", "baby-gpt", "--data", char_data, "--out", run, "--resume", "--steps", "12", *SMALL]):
        r = tandem.run(*args)
        assert_one_error(r, "model.safetensors", "truncated" if damage == "truncated" else "checksum mismatch")
    assert tree_digest(run) == before


def test_existing_run_is_not_overwritten(tandem, tmp_path, trained_run, char_data):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = tree_digest(run)
    r = tandem.run("train", "--config", "baby-gpt", "--data", char_data, "--out", run, "--steps", "5", *SMALL)
    assert_one_error(r, str(run), "--resume")
    assert tree_digest(run) == before
    # Resuming with a different recipe is refused too, naming the key.
    r = tandem.run("train", "--config", "baby-gpt", "--data", char_data, "--out", run, "--resume", "--steps", "12",
                   *SMALL[:-4])
    assert_one_error(r, "eval_interval")
    assert tree_digest(run) == before


def test_vocab_mismatch(tandem, tmp_path, char_data, trained_run, shakespeare_path):
    r = tandem.run("train", "--config", "baby-gpt", "--data", char_data, "--out", tmp_path / "r", "--set", "vocab_size=50")
    assert_one_error(r, "vocab_size 50")
    # A checkpoint whose tokenizer does not fit the model.
    bpe = tmp_path / "bpe"
    tandem("prepare", "--input", shakespeare_path, "--tokenizer", "bpe:300", "--out", bpe)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ck = run / "checkpoints" / "step_10"
    shutil.copy(bpe / "tokenizer.json", ck / "tokenizer.json")
    (ck / "manifest.json").unlink()  # a hand-assembled model directory, not a verified checkpoint
    r = tandem.run("generate", "--model", ck, "--prompt", "ROMEO:")
    assert_one_error(r, "tokenizer.json", "vocab_size 65")


def test_prompt_the_tokenizer_cannot_encode(tandem, trained_run):
    r = tandem.run("generate", "--model", trained_run, "--prompt", "ROMEO: 日本")
    assert_one_error(r, "--prompt", "U+65E5")


def test_grad_accumulation_trains(tandem, tmp_path, char_data):
    run = tmp_path / "accum"
    tandem("train", "--config", "baby-gpt", "--data", char_data, "--out", run, "--steps", "30", "--set", "grad_accum=3",
           "--set", "batch_size=4", *SMALL)
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 30
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.3
