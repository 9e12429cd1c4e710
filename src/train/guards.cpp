#include "train/guards.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "core/error.h"
#include "io/json_value.h"

namespace tandem {

namespace {

double median(std::vector<double> v) {
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<long>(mid), v.end());
  const double hi = v[mid];
  if (v.size() % 2) return hi;
  return 0.5 * (hi + *std::max_element(v.begin(), v.begin() + static_cast<long>(mid)));
}

template <typename... Args>
std::string format(const char* f, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, args...);
  return buf;
}

}  // namespace

TrainingGuard::TrainingGuard(const TrainConfig& c)
    : enabled_(c.guard),
      spike_k_(c.guard_spike_k),
      window_(static_cast<size_t>(c.guard_window)),
      rollback_after_(c.guard_rollback_after) {}

std::optional<GuardVerdict> TrainingGuard::check(int64_t step, uint64_t data_position, double loss, double grad_norm) {
  if (!enabled_) return std::nullopt;
  std::optional<GuardVerdict> bad;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    bad = GuardVerdict{"nonfinite", format("loss %g, grad_norm %g", loss, grad_norm)};
  } else if (spike_k_ > 0 && losses_.size() >= window_) {
    const std::vector<double> w(losses_.begin(), losses_.end());
    const double med = median(w);
    std::vector<double> dev(w.size());
    for (size_t i = 0; i < w.size(); ++i) dev[i] = std::abs(w[i] - med);
    // Floor the deviation: a window of identical losses (MAD 0) must not flag every wiggle.
    const double sigma = std::max(1.4826 * median(dev), 1e-3 * std::abs(med));
    const double limit = med + spike_k_ * sigma;
    if (loss > limit)
      bad = GuardVerdict{"spike", format("loss %.4f > %.4f (median %.4f + %g x robust deviation %.4f over %zu steps)",
                                         loss, limit, med, spike_k_, sigma, w.size())};
  }
  if (bad) {
    if (bad_streak_ == 0) {
      streak_step_ = step;
      streak_position_ = data_position;
    }
    ++bad_streak_;
    return bad;
  }
  bad_streak_ = 0;
  losses_.push_back(loss);
  while (losses_.size() > window_) losses_.pop_front();
  return std::nullopt;
}

nlohmann::json TrainingGuard::to_json() const {
  return {{"losses", std::vector<double>(losses_.begin(), losses_.end())},
          {"bad_streak", bad_streak_},
          {"streak_step", streak_step_},
          {"streak_position", streak_position_}};
}

void TrainingGuard::load(const nlohmann::json& j, const std::string& where) {
  losses_.clear();
  bad_streak_ = streak_step_ = 0;
  streak_position_ = 0;
  if (j.is_null()) return;
  try {
    for (double l : j.at("losses").get<std::vector<double>>()) losses_.push_back(l);
    // JSON integers only (a float like 1e300 cast to an integer is undefined behaviour).
    bad_streak_ = json_value<int64_t>(j.at("bad_streak"), where, "guard state field", "bad_streak");
    streak_step_ = json_value<int64_t>(j.at("streak_step"), where, "guard state field", "streak_step");
    streak_position_ = json_value<uint64_t>(j.at("streak_position"), where, "guard state field", "streak_position");
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed guard state: " + e.what());
  }
  while (losses_.size() > window_) losses_.pop_front();
}

}  // namespace tandem
