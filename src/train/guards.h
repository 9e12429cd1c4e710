// Training guards: decide, per step, whether an update is healthy enough to apply.
//   - a non-finite loss or gradient norm is always bad;
//   - a loss spike is bad: loss > median + k * robust deviation over the last `window` accepted
//     losses (robust deviation = 1.4826 * MAD, the standard deviation for Gaussian noise, but
//     unmoved by the outliers it is meant to catch). Only upward spikes count: a loss falling
//     faster than usual is not a fault.
// A bad step's update is skipped; `rollback_after` bad steps in a row call for a rollback (the
// trainer's job). The state is saved in checkpoints, so a resumed run makes the same decisions.
#pragma once
#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "train/config.h"

namespace tandem {

struct GuardVerdict {
  std::string kind;    // "nonfinite" or "spike"
  std::string detail;  // human-readable: the values and the threshold
};

class TrainingGuard {
 public:
  explicit TrainingGuard(const TrainConfig& c);

  // Judges one step (its loss and gradient norm, and the loader position it started from);
  // nullopt means apply the update. A healthy loss joins the window; a bad one extends the streak.
  std::optional<GuardVerdict> check(int64_t step, uint64_t data_position, double loss, double grad_norm);

  int64_t bad_streak() const { return bad_streak_; }
  bool rollback_due() const { return rollback_after_ > 0 && bad_streak_ >= rollback_after_; }
  // First step of the current bad streak, and the loader position it started from.
  int64_t streak_first_step() const { return streak_step_; }
  uint64_t streak_first_position() const { return streak_position_; }

  nlohmann::json to_json() const;
  // Restores to_json's state; null (a checkpoint from before guards) means a fresh guard.
  void load(const nlohmann::json& j, const std::string& where);

 private:
  bool enabled_;
  double spike_k_;
  size_t window_;
  int64_t rollback_after_;
  std::deque<double> losses_;  // accepted losses, oldest first
  int64_t bad_streak_ = 0, streak_step_ = 0;
  uint64_t streak_position_ = 0;
};

}  // namespace tandem
