// Values that change over training: mixture weights per source and the
// row length of each step. Every schedule is a pure function of the step
// (and the job's seed for drawn lengths), so a resumed or replayed run
// gets the same plan as the first one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace overlord::planner {

// A number as a function of the step.
struct step_schedule {
  enum class shape : uint8_t {
    constant,          // points[0].value everywhere
    piecewise_linear,  // linear between points, flat before the first and
                       // after the last
    stepwise,          // each point's value lasts until the next point
  };
  struct point {
    uint64_t step = 0;
    double value = 0;
  };

  shape kind = shape::constant;
  std::vector<point> points;  // sorted by step, steps distinct

  static step_schedule constant(double value);

  double at(uint64_t step) const;
  // Steps after `step` at which the value starts to change: the next
  // point's step for stepwise, the start of the next sloped segment for
  // piecewise-linear; UINT64_MAX when it never changes again.
  uint64_t next_change_after(uint64_t step) const;
  // A short description for logs and status, e.g. "linear 0:1 1000:4".
  std::string describe() const;
};

// The row length of each step: one length, a stepwise schedule, or a draw
// per step (for example 90% of steps at 4096 and 10% at 32768). The global
// token budget of a step stays fixed, so a step with longer rows has fewer.
struct length_schedule {
  enum class shape : uint8_t { constant, stepwise, draw };
  struct option {
    uint32_t length = 0;
    uint64_t from_step = 0;  // stepwise: first step with this length
    double weight = 0;       // draw: relative frequency
  };

  shape kind = shape::constant;
  // constant: one option; stepwise: options sorted by from_step, the first
  // from step 0; draw: options with positive weights.
  std::vector<option> options;

  static length_schedule constant(uint32_t length);

  // The length of step `step`; `seed` keys the per-step draw.
  uint32_t at(uint64_t step, uint64_t seed) const;
  uint32_t shortest() const;
  uint32_t longest() const;
  std::vector<uint32_t> lengths() const;
  std::string describe() const;
};

}  // namespace overlord::planner
