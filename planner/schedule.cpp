#include "planner/schedule.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "planner/rng.hpp"

namespace overlord::planner {

namespace {

std::string format_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

}  // namespace

step_schedule step_schedule::constant(double value) {
  step_schedule schedule;
  schedule.points.push_back({0, value});
  return schedule;
}

double step_schedule::at(uint64_t step) const {
  if (points.empty())
    return 0;
  if (kind == shape::constant || step <= points.front().step)
    return points.front().value;
  if (step >= points.back().step)
    return points.back().value;
  // The last point at or before `step`; the one after it exists.
  auto after = std::upper_bound(
      points.begin(), points.end(), step,
      [](uint64_t s, const point& p) { return s < p.step; });
  auto before = after - 1;
  if (kind == shape::stepwise)
    return before->value;
  double span = static_cast<double>(after->step - before->step);
  double into = static_cast<double>(step - before->step);
  return before->value + (after->value - before->value) * (into / span);
}

uint64_t step_schedule::next_change_after(uint64_t step) const {
  constexpr uint64_t never = std::numeric_limits<uint64_t>::max();
  if (kind == shape::constant)
    return never;
  for (size_t i = 0; i < points.size(); ++i) {
    if (points[i].step <= step)
      continue;
    if (kind == shape::stepwise) {
      if (points[i].value != at(step))
        return points[i].step;
      continue;
    }
    // Piecewise-linear: the value moves from points[i-1] on when the
    // segment ending at points[i] has a slope.
    if (i > 0 && points[i].value != points[i - 1].value)
      return std::max(step + 1, points[i - 1].step + 1);
  }
  return never;
}

std::string step_schedule::describe() const {
  if (kind == shape::constant)
    return points.empty() ? "0" : format_number(points.front().value);
  std::string text = kind == shape::stepwise ? "stepwise" : "piecewise_linear";
  for (const auto& p : points)
    text += " " + std::to_string(p.step) + ":" + format_number(p.value);
  return text;
}

length_schedule length_schedule::constant(uint32_t length) {
  length_schedule schedule;
  schedule.options.push_back({length, 0, 1});
  return schedule;
}

uint32_t length_schedule::at(uint64_t step, uint64_t seed) const {
  if (options.empty())
    return 0;
  switch (kind) {
    case shape::constant:
      return options.front().length;
    case shape::stepwise: {
      uint32_t length = options.front().length;
      for (const auto& o : options)
        if (o.from_step <= step)
          length = o.length;
      return length;
    }
    case shape::draw: {
      double total = 0;
      for (const auto& o : options)
        total += o.weight;
      auto key = derive_key(seed, stable_hash("sequence_length"));
      // 53 random bits give a uniform double in [0, 1).
      double u = static_cast<double>(draw(key, step) >> 11) * 0x1.0p-53;
      double target = u * total;
      double sum = 0;
      for (const auto& o : options) {
        sum += o.weight;
        if (target < sum)
          return o.length;
      }
      return options.back().length;
    }
  }
  return options.front().length;
}

std::vector<uint32_t> length_schedule::lengths() const {
  std::vector<uint32_t> out;
  for (const auto& o : options)
    out.push_back(o.length);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

uint32_t length_schedule::shortest() const {
  auto all = lengths();
  return all.empty() ? 0 : all.front();
}

uint32_t length_schedule::longest() const {
  auto all = lengths();
  return all.empty() ? 0 : all.back();
}

std::string length_schedule::describe() const {
  if (kind == shape::constant)
    return options.empty() ? "0" : std::to_string(options.front().length);
  std::string text = kind == shape::stepwise ? "stepwise" : "draw";
  for (const auto& o : options)
    text += " " + (kind == shape::stepwise
                       ? std::to_string(o.from_step) + ":" +
                             std::to_string(o.length)
                       : std::to_string(o.length) + ":" +
                             format_number(o.weight));
  return text;
}

}  // namespace overlord::planner
