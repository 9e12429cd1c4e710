// `tandem grpo-loss`: the GRPO objective and its gradient with respect to given logits, through the
// same pieces `tandem grpo` trains with (host advantages and token weights, the token_nll op and
// the graph's backward). This is how the PyTorch test of the loss sees inside the engine.
#include "cli/commands.h"
#include "core/autodiff.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/program.h"
#include "io/safetensors.h"
#include "train/grpo_loss.h"
#include "train/grpo_step.h"

namespace tandem::cli {

void register_grpo_loss(CLI::App& app) {
  auto* cmd = app.add_subcommand("grpo-loss", "GRPO loss and its gradient for given logits (parity testing)");
  struct Opts {
    std::string in, out, loss = "dapo", backend = "cpu";
    int64_t group = 8, max_new_tokens = 0;
    double clip = 0.2, clip_high = -1, kl_beta = 0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--in", o->in,
                  "safetensors: logits [S, T, V] f32; targets [S, T] int (< 0 off the completion); rewards [S]; "
                  "old_logp [S, T]; ref_logp [S, T] (with --kl-beta)")
      ->required();
  cmd->add_option("--out", o->out, "Output safetensors: loss, grad (d loss / d logits), weights, logp")->required();
  cmd->add_option("--group", o->group, "Completions per prompt (consecutive rows)")->capture_default_str();
  cmd->add_option("--loss", o->loss, "grpo, dr_grpo or dapo")->capture_default_str();
  cmd->add_option("--clip", o->clip, "Ratio clip below (and above, unless --clip-high)")->capture_default_str();
  cmd->add_option("--clip-high", o->clip_high, "Ratio clip above (DAPO clip-higher; default --clip)");
  cmd->add_option("--kl-beta", o->kl_beta, "Weight of the k3 KL to the reference")->capture_default_str();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "dr_grpo's length normaliser (default T)");
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  cmd->callback([o] {
    const SafetensorsFile f = SafetensorsFile::load(o->in);
    const HostTensor& lt = f.at("logits", o->in);
    check(lt.shape.size() == 3, o->in, ": logits must be [S, T, V]");
    const int64_t S = lt.shape[0], T = lt.shape[1];
    const std::vector<int32_t> targets = f.at("targets", o->in).to_i32(o->in + ": targets");
    const std::vector<float> rewards = f.at("rewards", o->in).to_f32(o->in + ": rewards");
    const std::vector<float> old_logp = f.at("old_logp", o->in).to_f32(o->in + ": old_logp");
    check(static_cast<int64_t>(targets.size()) == S * T && static_cast<int64_t>(old_logp.size()) == S * T &&
              static_cast<int64_t>(rewards.size()) == S,
          o->in, ": targets/old_logp must be [S, T] and rewards [S]");
    GrpoLossOptions opt;
    opt.type = parse_grpo_loss_type(o->loss, "--loss");
    opt.clip_low = o->clip;
    opt.clip_high = o->clip_high < 0 ? o->clip : o->clip_high;
    opt.kl_beta = o->kl_beta;
    opt.max_new_tokens = o->max_new_tokens > 0 ? o->max_new_tokens : T;

    auto backend = make_backend(o->backend);
    Graph g;
    NodeId logits = g.param("logits", lt.shape);
    WeightedNllNodes w = add_weighted_nll(g, logits, {S, T});
    std::vector<NodeId> wrt{logits};
    Backward bw = build_backward(g, w.loss, wrt);
    const NodeId grad = bw.grad.at(logits);
    Program prog(g, *backend, {w.loss, w.nll, grad});
    prog.bind(logits, Tensor::from_host(*backend, lt.shape, lt.to_f32(o->in + ": logits")));
    prog.bind(w.labels, Tensor::from_host_i32(*backend, {S, T}, targets));
    Tensor weights = Tensor::zeros(*backend, {S, T}, DType::f32);
    prog.bind(w.weights, weights);
    std::vector<float> one{1.0f};
    prog.bind(bw.seed, Tensor::from_host(*backend, {}, one));
    prog.run();  // the current log-probabilities (the weights do not change them)

    GrpoBatch b;
    b.S = S;
    b.T = T;
    std::vector<double> r(rewards.begin(), rewards.end());
    b.advantages = grpo_advantages(r, o->group, opt.type);
    const std::vector<float> nll = prog.get(w.nll).to_host();
    int64_t tokens = 0;
    for (size_t i = 0; i < targets.size(); ++i) {
      b.mask.push_back(targets[i] >= 0);
      tokens += targets[i] >= 0;
      b.logp.push_back(-static_cast<double>(nll[i]));
      b.old_logp.push_back(old_logp[i]);
    }
    if (opt.kl_beta != 0) {
      const std::vector<float> ref = f.at("ref_logp", o->in).to_f32(o->in + ": ref_logp");
      b.ref_logp.assign(ref.begin(), ref.end());
    }
    const GrpoLossResult res = grpo_token_weights(b, opt, tokens, S);
    weights.copy_from_host(res.weights);
    prog.run();

    SafetensorsFile out;
    out.tensors["loss"] = HostTensor::f32({1}, {static_cast<float>(res.loss)});
    out.tensors["grad"] = HostTensor::f32(lt.shape, prog.get(grad).to_host());
    out.tensors["weights"] = HostTensor::f32({S, T}, res.weights);
    std::vector<float> logp(nll.size());
    for (size_t i = 0; i < nll.size(); ++i) logp[i] = -nll[i];
    out.tensors["logp"] = HostTensor::f32({S, T}, logp);
    out.tensors["clip_frac"] = HostTensor::f32({1}, {static_cast<float>(res.clip_frac)});
    out.save(o->out);
  });
}

}  // namespace tandem::cli
