"""Fault tolerance of `tandem train` (README, "Fault tolerance"): SIGKILL at random moments,
SIGTERM/SIGINT, damaged checkpoints, NaN steps, silent gradient corruption and a full disk.

Runs use a tiny model (2 layers, 64 wide, 4 x 32 tokens per step) on one OpenMP thread: the
results do not depend on the thread count, and one thread is fastest at this size and steadiest
on a busy machine.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

TINY = ["--config", "baby-gpt", "--set", "n_layer=2", "--set", "n_embd=64", "--set", "n_head=4",
        "--set", "batch_size=4", "--set", "block_size=32", "--set", "eval_interval=1000",
        "--set", "eval_steps=10"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tandem, session_tmp, shakespeare_path) -> Path:
    out = session_tmp / "ft-char"
    if not (out / "val.bin").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", out)
    return out


def train(tandem, data: Path, run: Path, *args, check: bool = True):
    r = tandem.run("train", *TINY, "--data", data, "--out", run, *args, env=ENV)
    if check and r.returncode != 0:
        pytest.fail("tandem train failed:\n" + r.describe())
    return r


def spawn(tandem, data: Path, run: Path, *args) -> subprocess.Popen:
    argv = [str(tandem.binary), "train", *TINY, "--data", str(data), "--out", str(run), *map(str, args)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def steps_only(run: Path) -> list[dict]:
    return [m for m in metrics(run) if "event" not in m]


def events(run: Path, kind: str) -> list[dict]:
    return [m for m in metrics(run) if m.get("event") == kind]


def ckpt_steps(run: Path) -> list[int]:
    root = run / "checkpoints"
    return sorted(int(p.name[5:]) for p in root.iterdir() if p.name.startswith("step_") and p.is_dir())


def leftovers(run: Path) -> list[str]:
    return [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def last_step(run: Path) -> int:
    """The step of the last complete metrics line (a killed writer may leave a torn one)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError):
            continue
    return 0


def one_error(r) -> str:
    errors = [l for l in r.stderr.splitlines() if l.startswith("tandem: error:")]
    assert r.returncode != 0 and len(errors) == 1, r.describe()
    return errors[0]


# --- SIGKILL at 20 random moments ----------------------------------------------------------------

KILL_TOTAL = 1500  # steps; enough that 20 killed attempts cannot finish the run


def test_sigkill_at_random_moments_resumes_bit_identically(tandem, tmp_path, data):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    flags = ["--steps", KILL_TOTAL, "--checkpoint-every", "5", "--keep-last", "2", "--keep-every", "50"]
    train(tandem, data, straight, *flags)

    rng = random.Random(20240605)
    log, mid_write = [], 0
    for attempt in range(20):
        # Three kinds of moment, in turn: a random time after start (often during start-up or
        # loading), a random number of steps in, and the instant a checkpoint is being written.
        kind = ("time", "steps", "checkpoint")[attempt % 3]
        start = last_step(killed)
        proc = spawn(tandem, data, killed, *flags, "--resume")
        deadline = time.monotonic() + 60
        if kind == "time":
            time.sleep(rng.uniform(0.0, 0.25))
        elif kind == "steps":
            target = start + rng.randint(1, 12)
            while proc.poll() is None and last_step(killed) < target and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            # The second checkpoint write of this attempt, so that each attempt makes progress.
            seen = set()
            while proc.poll() is None and time.monotonic() < deadline:
                tmp = [p for p in (killed / "checkpoints").glob(".tmp.step_*")] if (killed / "checkpoints").exists() else []
                seen.update(p.name for p in tmp)
                if len(seen) >= 2:
                    break
            time.sleep(rng.uniform(0.0, 0.001))
        running, mid_before = proc.poll() is None, mid_write
        proc.kill()
        proc.wait()
        assert running, f"attempt {attempt} ({kind}) finished before the kill:\n{proc.stderr.read()[-2000:]}"
        if (killed / "checkpoints").exists() and any(n.startswith(".tmp.") for n in leftovers(killed)):
            mid_write += 1
        log.append(f"{kind}: step {start} -> {last_step(killed)}{' (mid-write)' if mid_write > mid_before else ''}")
        proc.stderr.close()

    print(f"{mid_write} kills inside a checkpoint write:", *log, sep="\n  ")  # shown with pytest -rP
    r = train(tandem, data, killed, *flags, "--resume")
    assert "done:" in r.stderr, r.describe()
    # Some kills landed inside a checkpoint write (a temporary directory was left behind), and the
    # resumed run cleaned those up.
    assert mid_write >= 3, log
    assert leftovers(killed) == []
    final = f"step_{KILL_TOTAL}"
    for f in ("model.safetensors", "optimizer.safetensors"):
        assert digest(killed / "checkpoints" / final / f) == digest(straight / "checkpoints" / final / f), (f, log)
    # The metrics read as if nothing happened: one line per step, the same losses.
    a, b = steps_only(straight), steps_only(killed)
    assert [m["step"] for m in b] == list(range(1, KILL_TOTAL + 1)), log
    assert [m["loss"] for m in a] == [m["loss"] for m in b]
    # Retention held through the kills: the newest 2 plus every 50th step.
    # Retention: every 50th step plus the last two (checkpoints every 5 steps).
    kept = sorted(set(range(50, KILL_TOTAL + 1, 50)) | {KILL_TOTAL - 5, KILL_TOTAL})
    assert ckpt_steps(killed) == ckpt_steps(straight) == kept
    assert os.readlink(killed / "checkpoints" / "latest") == final
    v = tandem("checkpoints", "--run", killed, "--verify")
    assert v.stdout.count(" ok") == len(kept), v.stdout


# --- SIGTERM / SIGINT ----------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_checkpoints_current_step_and_exits_0(tandem, tmp_path, data, sig):
    run = tmp_path / "run"
    proc = spawn(tandem, data, run, "--steps", "100000")
    deadline = time.monotonic() + 120
    while last_step(run) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read()
    # A second trainer on the same run directory is refused while the first one holds it.
    other = train(tandem, data, run, "--steps", "100000", "--resume", check=False)
    assert "another `tandem train` is running" in one_error(other)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    stopped = last_step(run)
    assert 20 <= stopped < 100000
    assert ckpt_steps(run) == [stopped], err
    stop = events(run, "stop")
    assert len(stop) == 1 and stop[0]["step"] == stopped and stop[0]["signal"] == sig.name, stop
    assert f"step {stopped}: stop: {sig.name}" in err
    assert sig.name in (run / "events.log").read_text()
    tandem("checkpoints", "--run", run, "--verify")
    r = train(tandem, data, run, "--steps", str(stopped + 3), "--resume")
    assert f"step_{stopped}" in r.stderr and last_step(run) == stopped + 3, r.describe()


# --- damaged checkpoints -------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_resume_skips_a_damaged_newest_checkpoint_and_says_why(tandem, tmp_path, data, damage):
    straight, run = tmp_path / "straight", tmp_path / "run"
    train(tandem, data, straight, "--steps", "25")
    train(tandem, data, run, "--steps", "20", "--checkpoint-every", "5")
    weights = run / "checkpoints" / "step_20" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(raw[: len(raw) // 2])
        why = rf"truncated or resized: expected {len(raw)} bytes, found {len(raw) // 2}"
    else:
        raw[len(raw) // 2] ^= 0x04
        weights.write_bytes(raw)
        why = r"checksum mismatch: expected xxh64 [0-9a-f]{16}, got [0-9a-f]{16}"

    v = tandem.run("checkpoints", "--run", run, "--verify")
    err = one_error(v)
    assert "step_20" in err and "model.safetensors" in err and re.search(why, err), v.describe()
    assert re.search(r"^\s+20\s+[\d.]+ MB\s+BAD: .*model\.safetensors", v.stdout, re.M), v.stdout
    assert re.search(r"^\s+15\s+[\d.]+ MB\s+ok$", v.stdout, re.M), v.stdout

    r = train(tandem, data, run, "--steps", "25", "--resume")
    said = [l for l in r.stderr.splitlines() if "step_20 is not usable" in l]
    assert len(said) == 1 and re.search(why, said[0]) and "resuming from step_15" in said[0], r.describe()
    assert "step_20 is not usable" in (run / "events.log").read_text()
    ev = events(run, "resume_skipped_checkpoint")
    assert len(ev) == 1 and re.search(why, ev[0]["detail"]), ev
    # Resumed from step 15, it retrained 16..25 exactly as an uninterrupted run, replacing step_20.
    for f in ("model.safetensors", "optimizer.safetensors"):
        assert digest(run / "checkpoints" / "step_25" / f) == digest(straight / "checkpoints" / "step_25" / f)
    tandem("checkpoints", "--run", run, "--verify")


# --- training guards: NaN steps ------------------------------------------------------------------

def test_nan_steps_are_skipped_or_rolled_back_and_the_run_recovers(tandem, tmp_path, data):
    clean, faulty, unguarded = tmp_path / "clean", tmp_path / "faulty", tmp_path / "unguarded"
    total = ["--steps", "300", "--checkpoint-every", "25"]
    train(tandem, data, clean, *total)
    # Step 50: one NaN step (skipped). Steps 149-151: three in a row (guard_rollback_after = 3),
    # a rollback to step_125 that skips the data those steps saw. Step 150's checkpoint falls in
    # the streak and is deferred, so --keep-last 1 cannot delete step_125, the rollback target.
    train(tandem, data, faulty, *total, "--keep-last", "1", "--inject-nan-at", "50,149,150,151")
    skips = events(faulty, "skip")
    assert [e["step"] for e in skips] == [50, 149, 150, 151], skips
    assert all(e["reason"] == "nonfinite" for e in skips)
    rb = events(faulty, "rollback")
    assert len(rb) == 1 and rb[0]["step"] == 151 and rb[0]["to_step"] == 125, rb
    assert rb[0]["skip_data"][1] - rb[0]["skip_data"][0] == 3, rb
    log = (faulty / "events.log").read_text()
    assert "step 50: skip: nonfinite" in log and "rolled back to step_125" in log
    assert "step 150: checkpoint deferred" in log
    state = json.loads((faulty / "checkpoints" / "step_300" / "trainer_state.json").read_text())
    assert state["skipped_data"] == [rb[0]["skip_data"]]

    final_clean, final_faulty = steps_only(clean)[-1]["val_loss"], steps_only(faulty)[-1]["val_loss"]
    assert abs(final_faulty - final_clean) <= 0.02 * final_clean, (final_clean, final_faulty)

    # The same fault without guards ruins the run: the injection is real, the guards are what help.
    train(tandem, data, unguarded, *total, "--set", "guard=false", "--inject-nan-at", "50")
    assert steps_only(unguarded)[-1]["val_loss"] is None  # NaN is written as null


# --- silent corruption: --verify-every ------------------------------------------------------------

def test_verify_every_catches_a_flipped_gradient_bit_and_rolls_back(tandem, tmp_path, data):
    clean, verified, silent = tmp_path / "clean", tmp_path / "verified", tmp_path / "silent"
    common = ["--steps", "40", "--checkpoint-every", "10"]
    train(tandem, data, clean, *common)
    train(tandem, data, verified, *common, "--verify-every", "5", "--inject-bitflip-at", "25")
    mismatch = events(verified, "verify_mismatch")
    assert len(mismatch) == 1 and mismatch[0]["step"] == 25, mismatch
    assert "gradient of transformer.wte.weight" in mismatch[0]["detail"]
    rb = events(verified, "rollback")
    assert len(rb) == 1 and rb[0]["to_step"] == 20, rb
    # The fault was transient: the replay from step_20 is exactly the clean run.
    f = "checkpoints/step_40/model.safetensors"
    assert digest(verified / f) == digest(clean / f)
    # Unverified, the same flip goes unnoticed and changes the model.
    train(tandem, data, silent, *common, "--inject-bitflip-at", "25")
    assert events(silent, "verify_mismatch") == [] and digest(silent / f) != digest(clean / f)


# --- disk full during a checkpoint ---------------------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path, request):
    """A directory where checkpoint writes run out of space after about 2.3 checkpoints (1.3 MB
    each), and the tandem flags that make it so: for a first run, and for later runs on the still
    full disk. 'tmpfs': a real 3 MB tmpfs (needs root to mount); 'write_limit': the
    --inject-write-limit hook, for machines where mounting is not allowed."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if request.param == "tmpfs":
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tandem-test", str(mount)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the write_limit variant covers this")
        yield mount, [], []
        subprocess.run(["umount", "-l", str(mount)], check=True)
    else:
        yield mount, ["--inject-write-limit", "3000000"], ["--inject-write-limit", "0"]


@pytest.mark.parametrize("tiny_fs", ["tmpfs", "write_limit"], indirect=True)
def test_disk_full_during_checkpoint_keeps_earlier_checkpoints(tandem, tmp_path, data, tiny_fs):
    mount, hook, hook_full = tiny_fs
    run = mount / "run"
    r = train(tandem, data, run, "--steps", "30", "--checkpoint-every", "5", *hook, check=False)
    err = one_error(r)
    assert "checkpoint step_15 not written" in err and "No space left on device" in err, r.describe()
    assert "earlier checkpoints are untouched (newest: step_10)" in err
    # Nothing half-written: no step_15, no temporary directory; the earlier ones verify.
    assert ckpt_steps(run) == [5, 10] and leftovers(run) == []
    v = tandem("checkpoints", "--run", run, "--verify")
    assert v.stdout.count(" ok") == 2, v.stdout
    assert len(events(run, "checkpoint_failed")) == 1

    # --on-checkpoint-error continue: the failure is an event and training goes on; the final
    # checkpoint must be written, so failing that one still stops the run.
    r = train(tandem, data, run, "--steps", "17", "--checkpoint-every", "5", "--resume", "--on-checkpoint-error",
              "continue", *hook_full, check=False)
    assert "checkpoint step_17 not written" in one_error(r)
    assert "step 15: checkpoint_failed" in r.stderr and last_step(run) == 17
    assert ckpt_steps(run) == [5, 10] and leftovers(run) == []

    # With room again (step_5 deleted, retention keeping one checkpoint), the run resumes from
    # step_10 and ends exactly where an uninterrupted run does.
    shutil.rmtree(run / "checkpoints" / "step_5")
    straight = tmp_path / "straight"
    train(tandem, data, straight, "--steps", "17")
    train(tandem, data, run, "--steps", "17", "--resume", "--checkpoint-every", "5", "--keep-last", "1")
    assert ckpt_steps(run) == [17]
    f = "checkpoints/step_17/model.safetensors"
    assert digest(run / f) == digest(straight / f)


# --- retention and the latest pointer ------------------------------------------------------------

def test_retention_and_latest(tandem, tmp_path, data):
    run = tmp_path / "run"
    train(tandem, data, run, "--steps", "30", "--checkpoint-every", "5", "--keep-last", "2", "--keep-every", "10")
    assert ckpt_steps(run) == [10, 20, 25, 30]
    assert os.readlink(run / "checkpoints" / "latest") == "step_30"
    log = (run / "events.log").read_text()
    assert "retention: removed step_5" in log and "retention: removed step_15" in log
    # The pointer is a model directory like any other.
    g = tandem("generate", "--model", run / "checkpoints" / "latest", "--prompt", "RO", "--max-tokens", "5", env=ENV)
    assert len(g.stdout) >= 5
