"""The GRPO objective and its logits gradient (`tandem grpo-loss`, the pieces `tandem grpo` trains
with: host advantages and token weights, the token_nll op, the graph's backward) against a PyTorch
float64 transcription of TRL's GRPOTrainer._compute_loss on the same logits, for every loss type,
with and without the k3 KL, with old log-probabilities off the current ones so that some tokens
clip (the --updates-per-batch > 1 case). The op's own gradient against float64 finite differences
is test_ops (cases token_nll*)."""
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

S, G, T, V = 12, 4, 7, 11


def make_batch(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (S, T, V)).astype(np.float32)
    targets = rng.integers(0, V, (S, T)).astype(np.int32)
    # Completions of different lengths after a prompt of 2: positions outside are -1.
    for s in range(S):
        n = int(rng.integers(1, T - 1))
        targets[s, :2] = -1
        targets[s, 2 + n:] = -1
    rewards = rng.integers(0, 2, S).astype(np.float32)
    rewards[:G] = 1.0  # one group without reward spread
    lp = torch.log_softmax(torch.from_numpy(logits).double(), -1)
    cur = lp.gather(-1, torch.from_numpy(targets).long().clamp(min=0)[..., None])[..., 0].numpy()
    # old log-probs: the current ones moved by up to +-0.6, so that ratios leave [0.8, 1.28].
    old = (cur + rng.uniform(-0.6, 0.6, cur.shape)).astype(np.float32)
    ref = (cur + rng.normal(0, 0.3, cur.shape)).astype(np.float32)
    return dict(logits=logits, targets=targets, rewards=rewards, old_logp=old, ref_logp=ref)


def torch_grpo(b, loss_type, eps_low, eps_high, beta):
    """TRL's GRPO loss (trl/trainer/grpo_trainer.py _compute_loss) in float64."""
    logits = torch.from_numpy(b["logits"]).double().requires_grad_(True)
    t = torch.from_numpy(b["targets"]).long()
    mask = (t >= 0).double()
    logp = torch.log_softmax(logits, -1).gather(-1, t.clamp(min=0)[..., None])[..., 0]
    r = torch.from_numpy(b["rewards"]).double().view(-1, G)
    adv = r - r.mean(1, keepdim=True)
    if loss_type != "dr_grpo":  # scale_rewards="group" (Bessel std + 1e-4); Dr. GRPO: "none"
        adv = adv / (r.std(1, keepdim=True) + 1e-4)
    adv = adv.reshape(-1, 1)
    old = torch.from_numpy(b["old_logp"]).double()
    coef_1 = torch.exp(logp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta != 0:
        ref = torch.from_numpy(b["ref_logp"]).double()
        per_token = per_token + beta * (torch.exp(ref - logp) - (ref - logp) - 1)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1)).mean()
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / mask.sum()
    else:  # dr_grpo: divided by B * max_completion_length
        loss = (per_token * mask).sum() / (S * T)
    loss.backward()
    clipped = ((coef_1 < 1 - eps_low) & (adv < 0)) | ((coef_1 > 1 + eps_high) & (adv > 0))
    return loss.item(), logits.grad.numpy(), (clipped.double() * mask).sum().item() / mask.sum().item()


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_matches_torch(tandem, tmp_path, loss_type, beta):
    b = make_batch(seed=["grpo", "dr_grpo", "dapo"].index(loss_type) * 2 + (beta > 0))
    save_file(b, str(tmp_path / "in.safetensors"))
    eps_low, eps_high = 0.2, 0.28
    tandem("grpo-loss", "--in", tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors",
           "--group", G, "--loss", loss_type, "--clip", eps_low, "--clip-high", eps_high, "--kl-beta", beta,
           "--max-new-tokens", T)
    out = load_file(str(tmp_path / "out.safetensors"))
    want_loss, want_grad, want_clip = torch_grpo(b, loss_type, eps_low, eps_high, beta)
    assert 0.05 < want_clip < 0.6, "the batch must exercise clipping"
    assert abs(float(out["loss"][0]) - want_loss) <= 1e-5
    assert out["clip_frac"][0] == pytest.approx(want_clip, abs=1e-6)
    err = np.abs(out["grad"].astype(np.float64) - want_grad).max()
    assert err <= 1e-5, f"max |grad - torch| = {err:.3g} (grad scale {np.abs(want_grad).max():.3g})"
    assert np.abs(want_grad).max() > 1e-3  # the comparison is not between zeros
