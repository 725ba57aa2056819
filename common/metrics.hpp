// A Prometheus metrics registry: counters, gauges and histograms with
// labels, rendered in the Prometheus text exposition format (version
// 0.0.4). Any thread may create, update and render metrics; each value
// is guarded by its own lock, and the family tables by the registry's.
//
// A metric handle returned by the registry stays valid until remove()
// drops that series or the registry is destroyed, so a caller may keep it.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace overlord::metrics {

// Label names and values of one series, in the family's label order.
using label_set = std::vector<std::pair<std::string, std::string>>;

enum class metric_type { counter, gauge, histogram };

// A value that only goes up (a reset happens only when the process starts).
class counter {
 public:
  // Adds `amount`, which must be >= 0; negative amounts are ignored so a
  // counter never goes down.
  void add(double amount = 1);
  double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down.
class gauge {
 public:
  void set(double value) { value_.store(value); }
  void add(double amount);
  double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into cumulative buckets by upper bound, plus their
// sum and count.
class histogram {
 public:
  // `bounds` are the buckets' upper bounds, strictly increasing; the +Inf
  // bucket is implicit.
  explicit histogram(std::vector<double> bounds);

  void observe(double value);

  struct snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  snapshot read() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class registry {
 public:
  // Returns the series of `name` with `labels`, creating family and series
  // on first use. Throws overlord::error(internal) for an invalid metric or
  // label name, or when the name was registered with another type, other
  // label names or other buckets.
  counter& get_counter(const std::string& name, const std::string& help,
                       const label_set& labels = {});
  gauge& get_gauge(const std::string& name, const std::string& help,
                   const label_set& labels = {});
  histogram& get_histogram(const std::string& name, const std::string& help,
                           const std::vector<double>& bounds,
                           const label_set& labels = {});

  // Drops one series, for example the gauges of a source pool that moved
  // to another node. Does nothing when the series does not exist.
  void remove(const std::string& name, const label_set& labels);

  // Renders every family with at least one series, sorted by name, and
  // each family's series sorted by label values.
  std::string render() const;

 private:
  struct family {
    metric_type type = metric_type::counter;
    std::string help;
    std::vector<std::string> label_names;
    std::vector<double> bounds;
    std::map<std::vector<std::string>, std::unique_ptr<counter>> counters;
    std::map<std::vector<std::string>, std::unique_ptr<gauge>> gauges;
    std::map<std::vector<std::string>, std::unique_ptr<histogram>> histograms;
  };

  family& family_of(const std::string& name, metric_type type,
                    const std::string& help, const label_set& labels,
                    const std::vector<double>& bounds);

  mutable std::mutex mutex_;
  std::map<std::string, family> families_;
};

// The registry that this process serves at /metrics.
registry& process_registry();

// Escapes a label value for the text format: backslash, double quote and
// line feed become \\, \" and \n.
std::string escape_label_value(const std::string& value);

// Escapes HELP text: backslash and line feed become \\ and \n.
std::string escape_help(const std::string& text);

// Formats a sample value or bucket bound: the shortest decimal that reads
// back as the same double, or +Inf, -Inf and NaN.
std::string format_value(double value);

}  // namespace overlord::metrics
