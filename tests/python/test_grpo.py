"""`tandem task make` and `tandem grpo`: a one-token bandit learns its rewarded token, a resumed run
equals an uninterrupted one, resampling zero-spread groups fills the update batch, 2 ranks under
mpirun equal one process, and a reward program that fails, hangs or prints garbage stops the run
with one clear error line while the checkpoints already written stay intact. The loss itself is
test_grpo_loss.py."""
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from conftest import tandem_path

ALPHABET = "abcdefgh"
PROMPTS = ["abc", "hgf", "dd", "eab"]
# The bandit's reward: 1 for the one token 'e', else 0 (awk: starts faster than python3, and tandem
# writes the JSON lines compact, keys in order).
REWARD_E = """exec:awk '{print index($0, "\\"completion\\":\\"e\\"") ? 1 : 0}'"""


@pytest.fixture(scope="module")
def fresh_model(tandem, session_tmp: Path) -> Path:
    """A one-layer model after a single step at a tiny learning rate: next-token probabilities near
    uniform over the 9 characters (the bandit's chance level is about 1/9)."""
    run = session_tmp / "grpo-fresh"
    if not (run / "checkpoints").exists():
        rng = random.Random(0)
        text = "".join(rng.choice(ALPHABET) + ("\n" if rng.random() < 0.1 else "") for _ in range(20000))
        (session_tmp / "grpo-text.txt").write_text(text)
        tandem("prepare", "--input", session_tmp / "grpo-text.txt", "--tokenizer", "char",
               "--out", session_tmp / "grpo-data")
        tandem("train", "--config", "baby-gpt", "--data", session_tmp / "grpo-data", "--out", run, "--steps", "1",
               "--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2", "--set", "n_positions=16",
               "--set", "block_size=16", "--set", "batch_size=2", "--set", "learning_rate=1e-6",
               "--set", "eval_interval=1000", "--set", "eval_steps=1")
    return run


@pytest.fixture(scope="module")
def ds_model(tandem, session_tmp: Path, fresh_model) -> Path:
    """A DeepSeek-V3 (ds-tiny shape, smaller; MTP module included) after one step on the same data."""
    run = session_tmp / "grpo-ds"
    if not (run / "checkpoints").exists():
        tandem("train", "--config", "ds-tiny", "--data", session_tmp / "grpo-data", "--out", run, "--steps", "1",
               "--set", "hidden_size=32", "--set", "num_hidden_layers=2", "--set", "block_size=16",
               "--set", "batch_size=2", "--set", "eval_interval=1000", "--set", "eval_steps=1")
    return run


@pytest.fixture
def prompts(tmp_path) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q, "answer": "e"}) + "\n" for q in PROMPTS))
    return p


def bandit_args(model, prompts, out, steps, *extra):
    return ["grpo", "--model", model, "--prompts", prompts, "--out", out, "--steps", steps, "--group", 8,
            "--prompts-per-step", 4, "--max-new-tokens", 1, "--lr", "1e-2", "--warmup", 1, "--reward", REWARD_E,
            "--eval-every", 0, *extra]


def steps_of(run: Path):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"reward_mean"' in l]


def test_bandit_reward_rises_from_chance(tandem, fresh_model, prompts, tmp_path):
    tandem(*bandit_args(fresh_model, prompts, tmp_path / "run", 20))
    m = steps_of(tmp_path / "run")
    assert len(m) == 20
    assert m[0]["reward_mean"] < 0.3, "the start must be near chance (1/9)"
    assert max(r["reward_mean"] for r in m[-5:]) > 0.9, [round(r["reward_mean"], 3) for r in m]
    for key in ("reward_std", "accuracy", "frac_reward_zero_std", "completion_len_mean", "completion_len_max",
                "truncated_frac", "scratchpad_frac", "entropy", "kl", "clip_frac", "grad_norm", "rollout_s",
                "update_s", "sampled_tokens_per_s"):
        assert key in m[0], key
    # The final checkpoint is a model directory `generate` reads.
    assert (tmp_path / "run" / "checkpoints" / "step_20" / "model.safetensors").exists()


TIMING = {"rollout_s", "reward_s", "update_s", "step_s", "sampled_tokens_per_s", "eval_s"}


def strip(m):
    return {k: v for k, v in m.items() if k not in TIMING}


@pytest.mark.parametrize("arch, extra", [
    ("gpt2", []),
    ("gpt2", ["--resample-zero-spread", 2]),
    ("gpt2", ["--updates-per-batch", 2, "--kl-beta", "0.04", "--loss", "grpo"]),
    ("deepseek_v3", ["--updates-per-batch", 2, "--kl-beta", "0.04", "--loss", "dr_grpo"]),
])
def test_resume_equals_uninterrupted(tandem, request, prompts, tmp_path, arch, extra):
    fresh_model = request.getfixturevalue("fresh_model" if arch == "gpt2" else "ds_model")
    whole, part = tmp_path / "whole", tmp_path / "part"
    tandem(*bandit_args(fresh_model, prompts, whole, 6, "--checkpoint-every", 3, *extra))
    tandem(*bandit_args(fresh_model, prompts, part, 3, "--checkpoint-every", 3, *extra))
    tandem(*bandit_args(fresh_model, prompts, part, 6, "--checkpoint-every", 3, "--resume", *extra))
    a, b = steps_of(whole), steps_of(part)
    assert [strip(m) for m in a] == [strip(m) for m in b]
    wa = (whole / "checkpoints" / "step_6" / "model.safetensors").read_bytes()
    wb = (part / "checkpoints" / "step_6" / "model.safetensors").read_bytes()
    assert wa == wb
    # `generate` reads a grpo checkpoint like a `train` one.
    tandem("generate", "--model", whole, "--prompt", "abc", "--max-tokens", 3, "--temperature", 0)


def test_resample_zero_spread_fills_the_batch(tandem, fresh_model, prompts, tmp_path):
    """Groups of 2 at chance (1/9 for 'e'): about 80% of the groups have no reward spread and add
    nothing to the gradient. Up to 4 extra rounds replace them by fresh groups with spread, so the
    fraction left in the update batch drops to about 0.8^5 = 0.33; the first round's samples are
    the very ones of the run without resampling."""
    def args(out, *extra):
        # A learning rate so small that the policy stays at chance: the steps are comparable.
        return ["grpo", "--model", fresh_model, "--prompts", prompts, "--out", out, "--steps", 3, "--group", 2,
                "--prompts-per-step", 16, "--max-new-tokens", 1, "--lr", "1e-7", "--warmup", 1, "--reward", REWARD_E,
                "--eval-every", 0, *extra]
    tandem(*args(tmp_path / "plain"))
    tandem(*args(tmp_path / "resampled", "--resample-zero-spread", 4))
    plain, res = steps_of(tmp_path / "plain"), steps_of(tmp_path / "resampled")
    assert [m["resampled_groups"] for m in plain] == [0, 0, 0]
    assert [m["frac_reward_zero_std_sampled"] for m in plain] == [m["frac_reward_zero_std"] for m in plain]
    # Step 1 (the same weights): the first round is the plain run's rollout.
    assert res[0]["frac_reward_zero_std_sampled"] == plain[0]["frac_reward_zero_std"]
    before = sum(m["frac_reward_zero_std"] for m in plain) / 3
    after = sum(m["frac_reward_zero_std"] for m in res) / 3
    assert before > 0.6 and after < before - 0.25, (before, after)
    for m in res:
        assert 1 <= m["resample_rounds"] <= 4 and m["resampled_groups"] >= round(16 * m["frac_reward_zero_std_sampled"])
        assert m["frac_reward_zero_std"] < m["frac_reward_zero_std_sampled"]
    # What trains differs: more groups with spread, a larger gradient.
    assert sum(m["grad_norm"] for m in res) > sum(m["grad_norm"] for m in plain)


MPIRUN = shutil.which("mpirun")


def mpirun(np_: int, *args, timeout=300):
    # One OpenMP thread per rank: 2 ranks on 2 cores (as tests/python/test_distributed.py).
    argv = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(np_), "-x", "OMP_NUM_THREADS=1",
            "--bind-to", "none", str(tandem_path()), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(MPIRUN is None, reason="OpenMPI's mpirun is not installed (scripts/setup.sh installs it)")
def test_mpirun_two_ranks_equal_one_process(tandem, fresh_model, prompts, tmp_path):
    """`mpirun -np 2 tandem grpo`: each rank samples 2 of the step's 4 prompts (8 completions each)
    and the gradient sums are all-reduced; one process with the same global batch samples the same
    completions (seeds derive from the global row) and gets the same rewards at every step, with
    the gradient norms and weights equal up to float rounding (the order in which the rows'
    contributions are added), and the 2-rank run (stopped and resumed half-way) learns the bandit."""
    one, two = tmp_path / "one", tmp_path / "two"
    tandem(*bandit_args(fresh_model, prompts, one, 20, "--resample-zero-spread", 1, "--checkpoint-every", 10))
    # The 2-rank run stops at step 10 and resumes (every rank reads the checkpoint rank 0 wrote).
    for steps, extra in ((10, []), (20, ["--resume"])):
        r = mpirun(2, *bandit_args(fresh_model, prompts, two, steps, "--resample-zero-spread", 1, "--checkpoint-every",
                                   10, *extra))
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = steps_of(one), steps_of(two)
    assert len(a) == len(b) == 20 and all(m["ranks"] == 2 for m in b)
    exact = ("reward_mean", "reward_std", "accuracy", "frac_reward_zero_std", "frac_reward_zero_std_sampled",
             "resampled_groups", "completion_len_mean", "clip_frac")
    for x, y in zip(a, b):
        assert {k: x[k] for k in exact} == {k: y[k] for k in exact}, (x["step"], x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-5 * x["grad_norm"] + 1e-7, (x["step"], x["grad_norm"], y["grad_norm"])
        assert abs(x["loss"] - y["loss"]) <= 1e-6, (x["step"], x["loss"], y["loss"])
        assert abs(x["entropy"] - y["entropy"]) <= 1e-6 * x["entropy"], (x["step"], x["entropy"], y["entropy"])
    assert max(m["reward_mean"] for m in b[-5:]) > 0.9, [round(m["reward_mean"], 3) for m in b]
    wa = load_file(one / "checkpoints" / "step_20" / "model.safetensors")
    wb = load_file(two / "checkpoints" / "step_20" / "model.safetensors")
    # The attention's key bias is left out: softmax ignores it, so its gradient is rounding noise
    # that AdamW scales up to steps of the learning rate (in either run, differently).
    n_embd = wa["transformer.wte.weight"].shape[1]
    for t in (wa, wb):
        t["transformer.h.0.attn.c_attn.bias"] = t["transformer.h.0.attn.c_attn.bias"][[*range(n_embd), *range(2 * n_embd, 3 * n_embd)]]
    worst = max(float(abs(wa[k].astype("float64") - wb[k]).max()) for k in wa)
    print(f"grpo, 2 ranks vs 1 process after 20 steps: max |dweight| = {worst:.3g} (weights moved ~0.1)")
    assert worst <= 1e-6
    # A world size that does not divide the prompts is refused before anything runs.
    r = mpirun(2, "grpo", "--model", fresh_model, "--prompts", prompts, "--out", tmp_path / "odd", "--steps", 1,
               "--prompts-per-step", 3, "--max-new-tokens", 1, "--eval-every", 0)
    assert r.returncode != 0 and "--prompts-per-step 3 is not a multiple of the 2 ranks" in r.stderr, r.stderr[-2000:]


def one_error(r) -> str:
    errors = [l for l in r.stderr.splitlines() if l.startswith("tandem: error:")]
    assert r.returncode != 0 and len(errors) == 1, r.describe()
    return errors[0]


@pytest.mark.parametrize("program, expect", [
    ("exit 3", "exited with status 3"),
    ("sleep 20", "did not finish within 1 s"),
    ("echo hello", "printed 'hello' on line 1"),
    ("echo 1", "printed 1 numbers for 32 completions"),
    ("kill -9 $$", "killed by signal 9"),
])
def test_bad_reward_program_one_clear_error(tandem, fresh_model, prompts, tmp_path, program, expect):
    r = tandem.run("grpo", "--model", fresh_model, "--prompts", prompts, "--out", tmp_path / "run", "--steps", 2,
                   "--group", 8, "--prompts-per-step", 4, "--max-new-tokens", 1, "--reward", "exec:" + program,
                   "--reward-timeout", 1, "--eval-every", 0, timeout=60)
    line = one_error(r)
    assert f"reward program '{program}'" in line and expect in line, line


def test_reward_failure_keeps_checkpoints(tandem, fresh_model, prompts, tmp_path):
    # Scores every completion 0.5 for two steps, then fails.
    script = tmp_path / "reward.sh"
    script.write_text(f"n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); n=$((n+1)); echo $n > {tmp_path}/calls\n"
                      "[ $n -ge 3 ] && { echo 'judge crashed' >&2; exit 2; }\n"
                      "while read -r line; do echo 0.5; done\n")
    r = tandem.run("grpo", "--model", fresh_model, "--prompts", prompts, "--out", tmp_path / "run", "--steps", 4,
                   "--group", 8, "--prompts-per-step", 4, "--max-new-tokens", 1, "--checkpoint-every", 2,
                   "--reward", f"exec:sh {script}", "--eval-every", 0, timeout=60)
    line = one_error(r)
    assert "exited with status 2" in line and "judge crashed" in line, line
    tandem("checkpoints", "--run", tmp_path / "run", "--verify")  # the newest checkpoint verifies
    assert (tmp_path / "run" / "checkpoints" / "step_2" / "model.safetensors").exists()


def test_task_make_parity(tandem, tmp_path):
    tandem("task", "make", "parity", "--bits", 8, "--out", tmp_path / "t", "--examples", 2000, "--prompts", 100,
           "--eval", 50, "--scratchpad", 0.25)
    lines = (tmp_path / "t" / "sft.txt").read_text().splitlines()
    assert len(lines) == 2000
    think = 0
    for l in lines:
        prompt, completion = l.split("?")
        bits = [int(c) for c in prompt]
        assert len(bits) == 8
        p = sum(bits) % 2
        if completion.startswith(":"):
            think += 1
            trace = completion[1:].split("=")[0]
            assert trace == "".join(str(sum(bits[:i + 1]) % 2) for i in range(8))
        assert completion.endswith(f"={p}")
    assert 0.2 < think / 2000 < 0.3
    ev = [json.loads(l) for l in (tmp_path / "t" / "eval.jsonl").read_text().splitlines()]
    rl = [json.loads(l) for l in (tmp_path / "t" / "prompts.jsonl").read_text().splitlines()]
    assert len(ev) == 50 and len(rl) == 100
    held = {e["prompt"] for e in ev}
    assert not held & {r["prompt"] for r in rl}
    assert not held & {l.split("?")[0] + "?" for l in lines}
    for e in ev:
        assert e["answer"] == str(sum(int(c) for c in e["prompt"][:-1]) % 2)


def test_task_make_addition(tandem, tmp_path):
    tandem("task", "make", "addition", "--digits", 3, "--out", tmp_path / "t", "--examples", 500, "--prompts", 20,
           "--eval", 20)
    for l in (tmp_path / "t" / "sft.txt").read_text().splitlines():
        prompt, completion = l.split("?")
        a, b = prompt.split("+")
        assert completion.endswith("=" + str(int(a) + int(b)))
        if completion.startswith(":"):
            assert completion[1:].split("=")[0] == str(int(a) + int(b))[::-1]
