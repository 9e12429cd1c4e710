// `tandem grad`: logits, loss and every parameter gradient for one batch, optionally followed by
// AdamW steps on it. This is how the PyTorch parity tests see inside the engine.
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "train/step.h"

namespace tandem::cli {

void register_grad(CLI::App& app) {
  auto* cmd = app.add_subcommand("grad", "Logits, loss and parameter gradients for one batch (parity testing)");
  struct Opts {
    std::string model, batch, out, backend = "cpu";
    int64_t steps = 0;
    std::vector<std::string> sets;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "Model directory (config.json + model.safetensors)")->required();
  cmd->add_option("--batch", o->batch, "safetensors file with input_ids and labels, [B, T] int32/int64")->required();
  cmd->add_option("--out", o->out, "Output safetensors: logits, loss, grad.<param>, losses, experts.<layer>")->required();
  cmd->add_option("--steps", o->steps, "AdamW steps on this batch at constant learning rate")->check(CLI::NonNegativeNumber);
  cmd->add_option("--set", o->sets,
                  "Optimizer setting: learning_rate, weight_decay, beta1, beta2, adam_eps, grad_clip; or "
                  "mtp_loss_weight (DeepSeek MTP's lambda, > 0; default 0.3)");
  cmd->add_option("--backend", o->backend, "Compute backend")->capture_default_str();
  add_fallback_option(cmd);
  cmd->callback([o] {
    LoadedModel m = load_model(o->model, o->backend, "f32");  // gradients of the f32 master, whatever the file stores
    const SafetensorsFile batch = SafetensorsFile::load(o->batch);
    const HostTensor& ids_t = batch.at("input_ids", o->batch);
    const HostTensor& lab_t = batch.at("labels", o->batch);
    check(ids_t.shape.size() == 2 && lab_t.shape == ids_t.shape, o->batch, ": input_ids and labels must both be [B, T]");
    const std::vector<int32_t> ids = ids_t.to_i32(o->batch + ": input_ids");
    const std::vector<int32_t> labels = lab_t.to_i32(o->batch + ": labels");
    for (int32_t id : ids)
      check(id >= 0 && id < m.model->vocab_size(), o->batch, ": input id ", id, " outside the vocabulary");
    for (int32_t id : labels)
      check(id < m.model->vocab_size(), o->batch, ": label ", id, " outside the vocabulary");
    nlohmann::json cj = {{"model_type", m.model->type()}, {"weight_decay", 0.1}, {"beta1", 0.9}, {"beta2", 0.99}};
    for (const auto& s : o->sets) {
      auto eq = s.find('=');
      check(eq != std::string::npos, "--set '", s, "': expected key=value");
      const std::string key = s.substr(0, eq);
      static const std::set<std::string> allowed{"learning_rate", "weight_decay", "beta1",    "beta2",
                                                 "adam_eps",      "grad_clip",    "mtp_loss_weight"};
      check(allowed.contains(key), "--set: unknown optimizer key '", key, "'");
      try {
        cj[key] = nlohmann::json::parse(s.substr(eq + 1));
      } catch (const std::exception&) {
        throw Error("--set " + key + ": not a number: " + s.substr(eq + 1));
      }
    }
    const TrainConfig cfg = TrainConfig::from_json(cj, "--set");
    if (cj.contains("mtp_loss_weight")) {
      // The MTP modules are trainable parameters of the loaded model: a weight of 0 would leave
      // them without a gradient path.
      check(cfg.mtp_loss_weight > 0, "--set mtp_loss_weight: must be > 0 for grad");
      m.model->set_mtp_loss_weight(cfg.mtp_loss_weight);
    }

    TrainingProgram prog(*m.model, *m.backend, *m.params, ids_t.shape[0], ids_t.shape[1], true);
    SafetensorsFile out;
    const double loss = prog.run(ids, labels);
    const Tensor& logits = prog.logits();
    out.tensors["logits"] = HostTensor::f32(logits.shape, logits.to_host());
    out.tensors["loss"] = HostTensor::f32({1}, {static_cast<float>(loss)});
    for (size_t i = 0; i < m.params->specs.size(); ++i)
      if (m.params->specs[i].trainable)
        out.tensors["grad." + m.params->specs[i].name] = HostTensor::f32(m.params->specs[i].shape, prog.grad(i).to_host());
    for (const auto& [name, loss_value] : prog.extra_losses())
      out.tensors[name] = HostTensor::f32({1}, {static_cast<float>(loss_value)});
    // MoE routing decisions, per layer: "experts.<layer prefix>" [B*T, top_k] expert ids.
    for (const auto& [name, id] : prog.nodes().router_choices)
      out.tensors["experts." + name] = HostTensor::i32(prog.router_choices(id).shape, prog.router_choices(id).to_host_i32());
    if (o->steps > 0) {
      AdamW opt(*m.params, *m.backend);
      std::vector<const Tensor*> grads(m.params->tensors.size());
      std::vector<float> losses;
      double cur = loss;
      for (int64_t s = 1; s <= o->steps; ++s) {
        if (s > 1) cur = prog.run(ids, labels);
        losses.push_back(static_cast<float>(cur));
        for (size_t i = 0; i < grads.size(); ++i) grads[i] = &prog.grad(i);
        double scale = 1.0;
        if (cfg.grad_clip > 0) scale = std::min(1.0, cfg.grad_clip / (global_norm(*m.backend, grads) + 1e-6));
        opt.step(*m.params, grads, cfg, cfg.learning_rate, s, static_cast<float>(scale));
      }
      out.tensors["losses"] = HostTensor::f32({o->steps}, losses);
    }
    out.save(o->out);
  });
}

}  // namespace tandem::cli
