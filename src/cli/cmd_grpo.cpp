// `tandem grpo`: reinforcement learning with verifiable rewards (train/grpo.h).
#include "cli/commands.h"
#include "train/grpo.h"

namespace tandem::cli {

void register_grpo(CLI::App& app) {
  auto* cmd = app.add_subcommand("grpo", "Reinforcement learning with verifiable rewards (GRPO) on a trained model");
  auto o = std::make_shared<GrpoOptions>();
  cmd->add_option("--model", o->model, "The starting (SFT) model: a run or model directory with tokenizer.json; also "
                                       "the KL reference")->required();
  cmd->add_option("--prompts", o->prompts, "RL prompts, JSON lines {\"prompt\", \"answer\"}")->required();
  cmd->add_option("--eval", o->eval, "Held-out prompts: greedy accuracy, pass@1 and pass@K every --eval-every steps");
  cmd->add_option("--out", o->out_dir, "Run directory (metrics.jsonl, checkpoints/)")->required();
  cmd->add_option("--group", o->group, "Completions sampled per prompt (G)")->capture_default_str();
  cmd->add_option("--prompts-per-step", o->prompts_per_step,
                  "Prompts per step (under mpirun: a multiple of the ranks, each sampling its share)")->capture_default_str();
  cmd->add_option("--steps", o->steps, "Total steps (0: evaluate the model only)")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "Rollout sampling temperature")->capture_default_str();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Longest completion; longer ones are truncated")->capture_default_str();
  cmd->add_option("--clip", o->clip, "PPO ratio clip epsilon (below, and above unless --clip-high)")->capture_default_str();
  cmd->add_option("--clip-high", o->clip_high, "Ratio clip above (DAPO clip-higher, e.g. 0.28); default --clip");
  cmd->add_option("--kl-beta", o->kl_beta, "Weight of the k3 KL to the --model reference (0: no reference)")
      ->capture_default_str();
  cmd->add_option("--loss", o->loss,
                  "grpo (per-sequence token mean, std-scaled advantages), dr_grpo (no std, no length "
                  "normalisation), dapo (token mean over the batch)")
      ->capture_default_str()
      ->check(CLI::IsMember({"grpo", "dr_grpo", "dapo"}));
  cmd->add_option("--reward", o->reward,
                  "exact (the answer after the last '=' equals \"answer\") or exec:CMD (reads JSON lines "
                  "{\"prompt\", \"completion\", \"answer\"} on stdin, writes one number per line)")
      ->capture_default_str();
  cmd->add_option("--reward-timeout", o->reward_timeout, "Seconds an exec: reward program may take per step")
      ->capture_default_str();
  cmd->add_option("--resample-zero-spread", o->resample_zero_spread,
                  "Extra sampling rounds (at most) that replace each group whose rewards are all equal by a fresh "
                  "prompt's group with spread (DAPO dynamic sampling; 0: off)")
      ->capture_default_str();
  cmd->add_option("--updates-per-batch", o->updates_per_batch,
                  "Optimizer steps per rollout batch (> 1: the old policy's log-probs are kept)")
      ->capture_default_str();
  cmd->add_option("--lr", o->learning_rate, "AdamW learning rate (constant after the warm-up)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup_steps, "Linear learning-rate warm-up steps")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--grad-clip", o->grad_clip, "Global gradient-norm clip (0: off)")->capture_default_str();
  cmd->add_option("--eval-every", o->eval_every, "Steps between evaluations (0: none)")->capture_default_str();
  cmd->add_option("--eval-limit", o->eval_limit, "Evaluate on the first N held-out prompts")->capture_default_str();
  cmd->add_option("--eval-samples", o->eval_samples, "Samples per held-out prompt at temperature 1 (pass@K)")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "Steps between checkpoints (and at the end)")
      ->capture_default_str();
  cmd->add_option("--decode-batch", o->decode_batch, "KV-cache slots for rollouts (0: all rows, at most 256)")
      ->capture_default_str();
  cmd->add_option("--collective-timeout", o->collective_timeout,
                  "Under mpirun: seconds any collective may wait before the job stops with an error")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of prompt choice and sampling")->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Continue from the run's newest checkpoint (equals an uninterrupted run)");
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  cmd->callback([o] { grpo(*o); });
}

}  // namespace tandem::cli
