#include "common/metrics.hpp"

#include <fmt/format.h>

#include <cmath>

#include "common/error.hpp"

namespace overlord::metrics {

namespace {

// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names: the same without
// ':' and not starting with "__", which Prometheus reserves.
bool valid_name(const std::string& name, bool label) {
  if (name.empty())
    return false;
  if (label && name.rfind("__", 0) == 0)
    return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    bool colon = c == ':' && !label;
    if (!(letter || colon || (digit && i > 0)))
      return false;
  }
  return true;
}

void add_atomic(std::atomic<double>& target, double amount) {
  double current = target.load();
  while (!target.compare_exchange_weak(current, current + amount)) {
  }
}

const char* type_name(metric_type type) {
  switch (type) {
    case metric_type::counter:
      return "counter";
    case metric_type::gauge:
      return "gauge";
    case metric_type::histogram:
      return "histogram";
  }
  return "untyped";
}

std::vector<std::string> values_of(const label_set& labels) {
  std::vector<std::string> values;
  for (const auto& label : labels)
    values.push_back(label.second);
  return values;
}

// Renders {a="x",b="y"} (plus `extra`, already rendered), or nothing for
// no labels at all.
std::string render_labels(const std::vector<std::string>& names,
                          const std::vector<std::string>& values,
                          const std::string& extra = "") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    out += out.empty() ? "{" : ",";
    out += names[i] + "=\"" + escape_label_value(values[i]) + "\"";
  }
  if (!extra.empty())
    out += (out.empty() ? "{" : ",") + extra;
  if (!out.empty())
    out += "}";
  return out;
}

}  // namespace

void counter::add(double amount) {
  if (amount > 0)
    add_atomic(value_, amount);
}

void gauge::add(double amount) { add_atomic(value_, amount); }

histogram::histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void histogram::observe(double value) {
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket])
    ++bucket;
  std::lock_guard<std::mutex> guard(mutex_);
  counts_[bucket]++;
  sum_ += value;
  count_++;
}

histogram::snapshot histogram::read() const {
  snapshot out;
  out.bounds = bounds_;
  std::lock_guard<std::mutex> guard(mutex_);
  uint64_t running = 0;
  for (uint64_t count : counts_) {
    running += count;
    out.cumulative.push_back(running);
  }
  out.sum = sum_;
  out.count = count_;
  return out;
}

registry::family& registry::family_of(const std::string& name,
                                      metric_type type,
                                      const std::string& help,
                                      const label_set& labels,
                                      const std::vector<double>& bounds) {
  auto found = families_.find(name);
  if (found == families_.end()) {
    if (!valid_name(name, false))
      throw error(errc::internal, "invalid metric name '" + name + "'");
    family created;
    created.type = type;
    created.help = help;
    for (const auto& label : labels) {
      if (!valid_name(label.first, true) ||
          (type == metric_type::histogram && label.first == "le"))
        throw error(errc::internal, "metric " + name +
                                        ": invalid label name '" +
                                        label.first + "'");
      created.label_names.push_back(label.first);
    }
    for (size_t i = 1; i < bounds.size(); ++i)
      if (!(bounds[i] > bounds[i - 1]))
        throw error(errc::internal,
                    "histogram " + name + ": bucket bounds must increase");
    created.bounds = bounds;
    found = families_.emplace(name, std::move(created)).first;
  }

  auto& existing = found->second;
  if (existing.type != type)
    throw error(errc::internal, "metric " + name + " is a " +
                                    type_name(existing.type) + ", not a " +
                                    type_name(type));
  bool same_labels = existing.label_names.size() == labels.size();
  for (size_t i = 0; same_labels && i < labels.size(); ++i)
    same_labels = existing.label_names[i] == labels[i].first;
  if (!same_labels)
    throw error(errc::internal,
                "metric " + name + " was registered with other label names");
  if (type == metric_type::histogram && existing.bounds != bounds)
    throw error(errc::internal,
                "histogram " + name + " was registered with other buckets");
  return existing;
}

counter& registry::get_counter(const std::string& name, const std::string& help,
                               const label_set& labels) {
  std::lock_guard<std::mutex> guard(mutex_);
  auto& f = family_of(name, metric_type::counter, help, labels, {});
  auto& slot = f.counters[values_of(labels)];
  if (!slot)
    slot = std::make_unique<counter>();
  return *slot;
}

gauge& registry::get_gauge(const std::string& name, const std::string& help,
                           const label_set& labels) {
  std::lock_guard<std::mutex> guard(mutex_);
  auto& f = family_of(name, metric_type::gauge, help, labels, {});
  auto& slot = f.gauges[values_of(labels)];
  if (!slot)
    slot = std::make_unique<gauge>();
  return *slot;
}

histogram& registry::get_histogram(const std::string& name,
                                   const std::string& help,
                                   const std::vector<double>& bounds,
                                   const label_set& labels) {
  std::lock_guard<std::mutex> guard(mutex_);
  auto& f = family_of(name, metric_type::histogram, help, labels, bounds);
  auto& slot = f.histograms[values_of(labels)];
  if (!slot)
    slot = std::make_unique<histogram>(bounds);
  return *slot;
}

void registry::remove(const std::string& name, const label_set& labels) {
  std::lock_guard<std::mutex> guard(mutex_);
  auto found = families_.find(name);
  if (found == families_.end())
    return;
  auto key = values_of(labels);
  found->second.counters.erase(key);
  found->second.gauges.erase(key);
  found->second.histograms.erase(key);
}

std::string registry::render() const {
  std::lock_guard<std::mutex> guard(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    if (f.counters.empty() && f.gauges.empty() && f.histograms.empty())
      continue;
    out += "# HELP " + name + " " + escape_help(f.help) + "\n";
    out += "# TYPE " + name + " " + type_name(f.type) + "\n";

    for (const auto& [values, series] : f.counters)
      out += name + render_labels(f.label_names, values) + " " +
             format_value(series->value()) + "\n";
    for (const auto& [values, series] : f.gauges)
      out += name + render_labels(f.label_names, values) + " " +
             format_value(series->value()) + "\n";

    for (const auto& [values, series] : f.histograms) {
      auto data = series->read();
      for (size_t i = 0; i <= data.bounds.size(); ++i) {
        double bound = i < data.bounds.size() ? data.bounds[i] : INFINITY;
        auto le = "le=\"" + format_value(bound) + "\"";
        out += name + "_bucket" + render_labels(f.label_names, values, le) +
               " " + std::to_string(data.cumulative[i]) + "\n";
      }
      out += name + "_sum" + render_labels(f.label_names, values) + " " +
             format_value(data.sum) + "\n";
      out += name + "_count" + render_labels(f.label_names, values) + " " +
             std::to_string(data.count) + "\n";
    }
  }
  return out;
}

registry& process_registry() {
  // Never destroyed, so threads that outlive main's locals can still
  // update metrics during shutdown.
  static registry* instance = new registry();
  return *instance;
}

std::string escape_label_value(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string escape_help(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value))
    return "NaN";
  if (std::isinf(value))
    return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

}  // namespace overlord::metrics
