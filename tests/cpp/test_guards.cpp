// Training guards (train/guards.h): which steps are judged bad, when a rollback is due, and that
// the state survives a checkpoint round trip.
#include <gtest/gtest.h>

#include <cmath>

#include "train/config.h"
#include "train/guards.h"

namespace tandem {
namespace {

TrainConfig guard_config(double k = 8.0, int64_t window = 20, int64_t rollback_after = 3) {
  TrainConfig c;
  c.guard_spike_k = k;
  c.guard_window = window;
  c.guard_rollback_after = rollback_after;
  return c;
}

// A noisy, slowly falling loss: 3.0 - 0.001 * i, +-0.02 of deterministic noise.
double loss_at(int i) { return 3.0 - 0.001 * i + 0.02 * std::sin(1.7 * i); }

void fill(TrainingGuard& g, int n) {
  for (int i = 0; i < n; ++i) ASSERT_FALSE(g.check(i + 1, static_cast<uint64_t>(i), loss_at(i), 1.0)) << "step " << i + 1;
}

TEST(Guards, NonFiniteLossOrNormIsBadFromTheFirstStep) {
  TrainingGuard g(guard_config());
  auto v = g.check(1, 0, NAN, 1.0);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->kind, "nonfinite");
  v = g.check(2, 1, 3.0, INFINITY);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->kind, "nonfinite");
  EXPECT_EQ(g.bad_streak(), 2);
  EXPECT_FALSE(g.check(3, 2, 3.0, 1.0));
  EXPECT_EQ(g.bad_streak(), 0);
}

TEST(Guards, SpikeNeedsAFullWindowAndOnlyCountsUpward) {
  TrainingGuard g(guard_config(6.0, 20));
  // Before the window is full, even a huge loss passes (nothing to compare it with).
  for (int i = 0; i < 19; ++i) ASSERT_FALSE(g.check(i + 1, i, loss_at(i), 1.0));
  EXPECT_FALSE(g.check(20, 19, 50.0, 1.0));
  TrainingGuard h(guard_config(6.0, 20));
  fill(h, 40);
  const auto v = h.check(41, 40, 4.0, 1.0);  // ~30 robust deviations above the median
  ASSERT_TRUE(v);
  EXPECT_EQ(v->kind, "spike");
  EXPECT_NE(v->detail.find("median"), std::string::npos) << v->detail;
  EXPECT_FALSE(h.check(42, 41, 1.0, 1.0)) << "a falling loss is never a spike";
  EXPECT_FALSE(h.check(43, 42, loss_at(42) + 0.05, 1.0)) << "ordinary noise is not a spike";
}

TEST(Guards, SpikeCheckOff) {
  TrainingGuard g(guard_config(0.0, 20));
  fill(g, 40);
  EXPECT_FALSE(g.check(41, 40, 100.0, 1.0));
  EXPECT_TRUE(g.check(42, 41, NAN, 1.0)) << "k = 0 turns off spikes, not the non-finite check";
}

TEST(Guards, DisabledAcceptsEverything) {
  TrainConfig c = guard_config();
  c.guard = false;
  TrainingGuard g(c);
  EXPECT_FALSE(g.check(1, 0, NAN, NAN));
}

TEST(Guards, RollbackDueAfterConsecutiveBadStepsAndStreakStart) {
  TrainingGuard g(guard_config(6.0, 20, 3));
  fill(g, 30);
  EXPECT_TRUE(g.check(31, 100, NAN, 1.0));
  EXPECT_FALSE(g.rollback_due());
  EXPECT_FALSE(g.check(32, 101, loss_at(31), 1.0));  // a good step breaks the streak
  EXPECT_TRUE(g.check(33, 102, NAN, 1.0));
  EXPECT_TRUE(g.check(34, 103, NAN, 1.0));
  EXPECT_FALSE(g.rollback_due());
  EXPECT_TRUE(g.check(35, 104, NAN, 1.0));
  EXPECT_TRUE(g.rollback_due());
  EXPECT_EQ(g.streak_first_step(), 33);
  EXPECT_EQ(g.streak_first_position(), 102u);
}

TEST(Guards, StateRoundTripsAndDecidesAlike) {
  TrainingGuard a(guard_config(6.0, 20));
  fill(a, 25);
  ASSERT_TRUE(a.check(26, 25, NAN, 1.0));
  TrainingGuard b(guard_config(6.0, 20));
  b.load(nlohmann::json::parse(a.to_json().dump()), "test");
  EXPECT_EQ(a.to_json(), b.to_json());
  EXPECT_EQ(b.bad_streak(), 1);
  for (double loss : {2.99, 3.2, 2.5, 9.0}) {
    const auto va = a.check(27, 26, loss, 1.0), vb = b.check(27, 26, loss, 1.0);
    EXPECT_EQ(va.has_value(), vb.has_value()) << loss;
  }
}

}  // namespace
}  // namespace tandem
