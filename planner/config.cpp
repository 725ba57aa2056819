#include "planner/config.hpp"

#include <glob.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "common/error.hpp"

namespace fs = std::filesystem;

namespace overlord::planner {

namespace {

// Returns `names` in order, separated by commas.
std::string join_names(const std::set<std::string>& names) {
  std::string list;
  for (const auto& name : names)
    list += (list.empty() ? "" : ", ") + name;
  return list;
}

const std::set<std::string> top_level_keys = {
    "seed",         "sequence_length",  "rows_per_rank",      "ranks",
    "global_rows",  "topology",         "cost_model",         "balancer",
    "planner_port", "loader_nodes",     "constructor_nodes",  "node_timeout_ms",
    "checkpoint_dir", "checkpoint_every", "checkpoint_keep",
    "bind",         "base_port",        "on_bad_input",       "mix_by",
    "tokenizer",    "plan_ahead",       "startup_prefetch_steps", "buffer_documents", "buffer_bytes",   "max_document_bytes",
    "log_level",    "autoscale",        "sources",
    "metrics_port", "image_token_id",   "max_request_bytes",  "max_client_requests",
    "read_range_bytes",
    "image_read_range_bytes", "worker_nice",
};

const std::set<std::string> topology_keys = {"dp", "tp", "pp", "cp",
                                              "consumers"};
const std::set<std::string> cost_model_keys = {"attention", "linear",
                                               "quadratic", "vision"};
const std::set<std::string> vision_cost_keys = {"linear", "quadratic"};
const std::set<std::string> autoscale_keys = {
    "enabled", "headroom", "interval_ms", "cpu_budget", "lookahead_steps"};

const std::set<std::string> source_keys = {
    "name",    "format",      "text_field",  "paths",
    "weight",  "workers",     "min_workers", "max_workers",
    "append_eos", "caption_field", "image_max_pixels", "patch_size",
    "image_mean", "image_std", "max_document_bytes",
};

// Keys that only WebDataset (image-text) sources accept.
const std::set<std::string> webdataset_keys = {
    "caption_field", "image_max_pixels", "patch_size", "image_mean",
    "image_std",
};

// Image token positions plus one caption token plus EOS: the smallest
// image-text document, which must fit in one row.
constexpr uint32_t min_caption_positions = 2;

// Reads one YAML document and reports problems with the place they come
// from: a line of the config file, or the --set flag that wrote the value.
class checker {
 public:
  checker(std::string origin, std::string base_dir)
      : origin_(std::move(origin)), base_dir_(std::move(base_dir)) {}

  void mark_overridden(const std::string& key, const std::string& flag) {
    overridden_[key] = flag;
  }

  // Returns ", from --set FLAG" when a --set flag wrote `key`, else "".
  std::string origin_of(const std::string& key) const {
    auto flag = overridden_.find(key);
    return flag == overridden_.end() ? "" : ", from --set " + flag->second;
  }

  [[noreturn]] void fail(const YAML::Node& node, const std::string& key,
                         const std::string& problem) const {
    std::ostringstream out;
    auto flag = overridden_.find(key);
    if (flag != overridden_.end())
      out << "--set " << flag->second;
    else if (node.IsDefined() && node.Mark().line >= 0)
      out << origin_ << ":" << node.Mark().line + 1;
    else
      out << origin_;
    out << ": " << key << ": " << problem;
    throw error(errc::invalid_config, out.str());
  }

  template <class T>
  T scalar(const YAML::Node& node, const std::string& key,
           const char* type_name) const {
    if (!node.IsScalar())
      fail(node, key, std::string("expected ") + type_name + ", got a " +
                          kind(node));
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      fail(node, key, std::string("expected ") + type_name + ", got '" +
                          node.Scalar() + "'");
    }
  }

  int integer(const YAML::Node& node, const std::string& key, int min_value,
              int max_value) const {
    auto value = scalar<long long>(node, key, "integer");
    if (value < min_value || value > max_value)
      fail(node, key,
           "value " + std::to_string(value) + " is out of range; use " +
               std::to_string(min_value) + " to " + std::to_string(max_value));
    return static_cast<int>(value);
  }

  std::string choice(const YAML::Node& node, const std::string& key,
                     const std::vector<std::string>& choices) const {
    auto value = scalar<std::string>(node, key, "string");
    if (std::find(choices.begin(), choices.end(), value) != choices.end())
      return value;
    std::string list;
    for (const auto& option : choices)
      list += (list.empty() ? "" : " or ") + option;
    fail(node, key, "unknown value '" + value + "'; use " + list);
  }

  void check_keys(const YAML::Node& map, const std::string& prefix,
                  const std::set<std::string>& allowed) const {
    std::set<std::string> seen;
    for (const auto& entry : map) {
      // as<std::string>() throws YAML::BadConversion on a list or map key
      // ("? [a]" in YAML), which no caller expects from the config loader.
      if (!entry.first.IsScalar())
        fail(entry.first, prefix + "(key)",
             std::string("expected a key name, got a ") + kind(entry.first) +
                 "; write keys as plain names");
      auto key = entry.first.as<std::string>();
      // yaml-cpp keeps both entries of a repeated key and reads the first,
      // which would silently ignore the later value.
      if (!seen.insert(key).second)
        fail(entry.first, prefix + key,
             "duplicate key; the value given first would win, so remove one");
      if (allowed.count(key) == 0)
        fail(entry.first, prefix + key,
             "unknown key; valid keys here are " + join_names(allowed));
    }
  }

  std::string resolve(const std::string& path) const {
    fs::path p(path);
    if (p.is_absolute())
      return p.lexically_normal().string();
    return (fs::path(base_dir_) / p).lexically_normal().string();
  }

  static const char* kind(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Sequence:
        return "list";
      case YAML::NodeType::Map:
        return "map";
      case YAML::NodeType::Null:
        return "null value";
      default:
        return "scalar";
    }
  }

 private:
  std::string origin_;
  std::string base_dir_;
  std::map<std::string, std::string> overridden_;
};

// Returns whether `path` names a regular file. A path the file system
// rejects, such as one with a name over NAME_MAX bytes, counts as no file:
// the overload without std::error_code throws filesystem_error there,
// which would end overlordd instead of reporting the config error.
bool is_regular_file_or_false(const fs::path& path) {
  std::error_code ignored;
  return fs::is_regular_file(path, ignored);
}

// Returns the regular files `pattern` matches; `others` counts matches
// that are not regular files (folders, for example), which are ignored.
std::vector<std::string> expand_glob(const std::string& pattern,
                                     size_t& others) {
  glob_t result{};
  std::vector<std::string> files;
  others = 0;
  if (glob(pattern.c_str(), GLOB_NOSORT, nullptr, &result) == 0) {
    for (size_t i = 0; i < result.gl_pathc; ++i) {
      if (is_regular_file_or_false(result.gl_pathv[i]))
        files.emplace_back(result.gl_pathv[i]);
      else
        ++others;
    }
  }
  globfree(&result);
  return files;
}

// Reads a list of [a, b] pairs, as schedules write their points.
std::vector<std::pair<YAML::Node, YAML::Node>> pairs_of(
    const YAML::Node& node, const std::string& key, const checker& check,
    const char* example) {
  if (!node.IsSequence() || node.size() == 0)
    check.fail(node, key,
               std::string("expected a non-empty list of pairs, for example ") +
                   example);
  std::vector<std::pair<YAML::Node, YAML::Node>> out;
  for (const auto& entry : node) {
    if (!entry.IsSequence() || entry.size() != 2)
      check.fail(entry, key,
                 std::string("each entry must be a pair, for example ") +
                     example);
    out.emplace_back(entry[0], entry[1]);
  }
  return out;
}

uint64_t schedule_step(const YAML::Node& node, const std::string& key,
                       const checker& check) {
  return check.scalar<uint64_t>(node, key, "non-negative step number");
}

// Returns ", got keys a, b" naming the keys of a map node, or "".
std::string extra_keys(const YAML::Node& node) {
  if (!node.IsMap() || node.size() == 0)
    return "";
  std::string names;
  for (const auto& entry : node)
    names += (names.empty() ? "" : ", ") + entry.first.Scalar();
  return ", got keys " + names;
}

// A source weight: a number, or a map with one key, `piecewise_linear` or
// `stepwise`, holding [step, weight] pairs in increasing step order.
step_schedule parse_weight(const YAML::Node& node, const std::string& key,
                           const checker& check) {
  auto check_value = [&](const YAML::Node& value_node) {
    double value = check.scalar<double>(value_node, key, "number");
    if (!std::isfinite(value) || value < 0)
      check.fail(value_node, key,
                 "weight must be a finite number >= 0; weights are relative, "
                 "so scale them instead");
    return value;
  };
  if (node.IsScalar())
    return step_schedule::constant(check_value(node));
  if (!node.IsMap() || node.size() != 1)
    check.fail(node, key,
               "expected a number or a map with one key, piecewise_linear or "
               "stepwise, listing [step, weight] pairs" +
                   extra_keys(node));
  auto kind = check.scalar<std::string>(node.begin()->first, key, "string");
  step_schedule schedule;
  if (kind == "piecewise_linear")
    schedule.kind = step_schedule::shape::piecewise_linear;
  else if (kind == "stepwise")
    schedule.kind = step_schedule::shape::stepwise;
  else
    check.fail(node.begin()->first, key,
               "unknown schedule '" + kind +
                   "'; use piecewise_linear or stepwise");
  const char* example = "[[0, 1.0], [1000, 0.25]]";
  for (const auto& [step_node, value_node] :
       pairs_of(node.begin()->second, key + "." + kind, check, example)) {
    uint64_t step = schedule_step(step_node, key + "." + kind, check);
    if (!schedule.points.empty() && step <= schedule.points.back().step)
      check.fail(step_node, key + "." + kind,
                 "steps must increase from one point to the next; sort them "
                 "and remove repeats");
    schedule.points.push_back({step, check_value(value_node)});
  }
  if (schedule.kind == step_schedule::shape::stepwise &&
      schedule.points.front().step != 0)
    check.fail(node.begin()->second, key + ".stepwise",
               "the first point must be at step 0, so every step has a "
               "weight");
  return schedule;
}

// The row length: a number, or a map with one key, `stepwise` ([step,
// length] pairs) or `draw` ([length, relative frequency] pairs).
length_schedule parse_lengths(const YAML::Node& node, const checker& check) {
  const std::string key = "sequence_length";
  if (node.IsScalar())
    return length_schedule::constant(
        static_cast<uint32_t>(check.integer(node, key, 1, 1 << 24)));
  if (!node.IsMap() || node.size() != 1)
    check.fail(node, key,
               "expected a number or a map with one key, stepwise ([step, "
               "length] pairs) or draw ([length, frequency] pairs)" +
                   extra_keys(node));
  auto kind = check.scalar<std::string>(node.begin()->first, key, "string");
  length_schedule schedule;
  auto list = node.begin()->second;
  if (kind == "stepwise") {
    schedule.kind = length_schedule::shape::stepwise;
    for (const auto& [step_node, length_node] :
         pairs_of(list, key + ".stepwise", check, "[[0, 4096], [5000, 32768]]")) {
      uint64_t step = schedule_step(step_node, key + ".stepwise", check);
      if (!schedule.options.empty() &&
          step <= schedule.options.back().from_step)
        check.fail(step_node, key + ".stepwise",
                   "steps must increase from one entry to the next");
      length_schedule::option o;
      o.from_step = step;
      o.length = static_cast<uint32_t>(
          check.integer(length_node, key + ".stepwise", 1, 1 << 24));
      schedule.options.push_back(o);
    }
    if (schedule.options.front().from_step != 0)
      check.fail(list, key + ".stepwise",
                 "the first entry must be at step 0, so every step has a "
                 "length");
  } else if (kind == "draw") {
    schedule.kind = length_schedule::shape::draw;
    for (const auto& [length_node, weight_node] :
         pairs_of(list, key + ".draw", check, "[[4096, 0.9], [32768, 0.1]]")) {
      length_schedule::option o;
      o.length = static_cast<uint32_t>(
          check.integer(length_node, key + ".draw", 1, 1 << 24));
      o.weight = check.scalar<double>(weight_node, key + ".draw", "number");
      if (!std::isfinite(o.weight) || o.weight <= 0)
        check.fail(weight_node, key + ".draw",
                   "frequency must be a finite number > 0");
      for (const auto& other : schedule.options)
        if (other.length == o.length)
          check.fail(length_node, key + ".draw",
                     "length " + std::to_string(o.length) +
                         " is listed twice; merge the entries");
      schedule.options.push_back(o);
    }
  } else {
    check.fail(node.begin()->first, key,
               "unknown schedule '" + kind + "'; use stepwise or draw");
  }
  return schedule;
}

void parse_autoscale(const YAML::Node& node, const checker& check,
                     job_config& config) {
  if (!node.IsMap())
    check.fail(node, "autoscale",
               "expected a map with enabled, headroom, interval_ms, "
               "cpu_budget and lookahead_steps");
  check.check_keys(node, "autoscale.", autoscale_keys);
  auto& a = config.autoscale;
  if (node["enabled"])
    a.enabled = check.scalar<bool>(node["enabled"], "autoscale.enabled",
                                   "boolean");
  if (node["headroom"]) {
    a.headroom = check.scalar<double>(node["headroom"], "autoscale.headroom",
                                      "number");
    if (!std::isfinite(a.headroom) || a.headroom < 1 || a.headroom > 16)
      check.fail(node["headroom"], "autoscale.headroom",
                 "use a number from 1 (no spare capacity) to 16");
  }
  if (node["interval_ms"])
    a.interval_ms = check.integer(node["interval_ms"], "autoscale.interval_ms",
                                  50, 600000);
  if (node["cpu_budget"])
    a.cpu_budget = check.integer(node["cpu_budget"], "autoscale.cpu_budget",
                                 0, 4096);
  if (node["lookahead_steps"])
    a.lookahead_steps = check.integer(
        node["lookahead_steps"], "autoscale.lookahead_steps", 0, 1 << 20);
}

// Writes one --set override into the parsed tree before it is checked, so
// overridden values go through the same checks as written ones.
void apply_override(YAML::Node root, const config_override& item,
                    checker& check) {
  const auto& [key, text] = item;
  std::vector<std::string> parts;
  std::stringstream stream(key);
  for (std::string part; std::getline(stream, part, '.');)
    parts.push_back(part);
  auto flag = key + "=" + text;

  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw error(errc::invalid_config,
                "--set " + flag + ": value is not valid YAML (" + e.msg + ")");
  }

  if (parts.size() == 1 && parts[0] != "sources") {
    if (top_level_keys.count(parts[0]) == 0)
      throw error(errc::invalid_config,
                  "--set " + flag + ": unknown key '" + parts[0] +
                      "'; valid top-level keys are " +
                      join_names(top_level_keys));
    root[parts[0]] = value;
    check.mark_overridden(parts[0], flag);
    return;
  }

  // A key inside one of the top-level maps: topology.dp, autoscale.enabled.
  static const std::map<std::string, const std::set<std::string>*> maps = {
      {"topology", &topology_keys},
      {"cost_model", &cost_model_keys},
      {"autoscale", &autoscale_keys},
  };
  if (parts.size() == 2 && maps.count(parts[0]) != 0) {
    if (maps.at(parts[0])->count(parts[1]) == 0)
      throw error(errc::invalid_config,
                  "--set " + flag + ": unknown key '" + parts[1] + "' in " +
                      parts[0] + "; valid keys there are " +
                      join_names(*maps.at(parts[0])));
    if (root[parts[0]] && !root[parts[0]].IsMap())
      throw error(errc::invalid_config,
                  "--set " + flag + ": " + parts[0] + " is not a map here");
    root[parts[0]][parts[1]] = value;
    check.mark_overridden(key, flag);
    return;
  }

  if (parts.size() == 3 && parts[0] == "sources") {
    auto sources = root["sources"];
    if (sources.IsSequence()) {
      for (auto entry : sources) {
        if (entry.IsMap() && entry["name"] &&
            entry["name"].Scalar() == parts[1]) {
          if (source_keys.count(parts[2]) == 0 || parts[2] == "name") {
            // A source is addressed by its name, which --set cannot change.
            auto settable = source_keys;
            settable.erase("name");
            throw error(errc::invalid_config,
                        "--set " + flag + ": unknown source key '" + parts[2] +
                            "'; valid source keys are " + join_names(settable));
          }
          entry[parts[2]] = value;
          check.mark_overridden("sources." + parts[1] + "." + parts[2], flag);
          return;
        }
      }
    }
    throw error(errc::invalid_config, "--set " + flag + ": no source named '" +
                                          parts[1] +
                                          "' in the config; check the name");
  }

  throw error(errc::invalid_config,
              "--set " + flag +
                  ": cannot address this key; use KEY=VALUE for a top-level "
                  "key, MAP.KEY=VALUE inside topology, cost_model or "
                  "autoscale, or sources.NAME.KEY=VALUE for a source");
}

// Turns the .idx files an indexed source's globs matched into dataset
// prefixes, and checks that each has its .bin next to it.
std::vector<std::string> indexed_prefixes(const std::vector<std::string>& files,
                                          const YAML::Node& paths,
                                          const std::string& prefix,
                                          const checker& check) {
  const std::string suffix = ".idx";
  std::vector<std::string> prefixes;
  for (const auto& file : files) {
    if (file.size() <= suffix.size() ||
        file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0)
      check.fail(paths, prefix + "paths",
                 "'" + file +
                     "' is not a .idx file; the globs of an indexed source "
                     "match PREFIX.idx files, for example data/corpus/*.idx");
    auto dataset = file.substr(0, file.size() - suffix.size());
    if (!is_regular_file_or_false(dataset + ".bin"))
      check.fail(paths, prefix + "paths",
                 "'" + file + "' has no data file '" + dataset +
                     ".bin' next to it; copy the .bin with its .idx");
    prefixes.push_back(dataset);
  }
  return prefixes;
}

// Reads three finite numbers (R, G, B); `positive` also demands > 0.
std::array<float, 3> parse_channels(const YAML::Node& node,
                                    const std::string& key,
                                    const checker& check, bool positive) {
  if (!node.IsSequence() || node.size() != 3)
    check.fail(node, key, "expected a list of 3 numbers (R, G, B)");
  std::array<float, 3> out{};
  for (size_t c = 0; c < 3; ++c) {
    double value = check.scalar<double>(node[c], key, "number");
    if (!std::isfinite(value) || (positive && !(value > 0)))
      check.fail(node[c], key,
                 std::string("each value must be a finite number") +
                     (positive ? " > 0" : "") + " on the 0..1 pixel scale");
    out[c] = static_cast<float>(value);
  }
  return out;
}

// Reads the image-text keys of a source and rejects them on other formats.
void parse_image_keys(const YAML::Node& node, const std::string& prefix,
                      const checker& check, source_config& source) {
  if (source.format != source_format::webdataset) {
    for (const auto& key : webdataset_keys)
      if (node[key])
        check.fail(node[key], prefix + key,
                   "only webdataset sources have this key; remove it");
    return;
  }
  if (node["caption_field"]) {
    source.caption_field = check.scalar<std::string>(
        node["caption_field"], prefix + "caption_field", "string");
    if (source.caption_field.empty())
      check.fail(node["caption_field"], prefix + "caption_field",
                 "empty field name; name the JSON field holding the caption");
  }
  if (node["patch_size"])
    source.patch_size = static_cast<uint32_t>(
        check.integer(node["patch_size"], prefix + "patch_size", 1, 1024));
  const int max_pixels_limit = 1 << 26;  // sources::max_source_pixels
  if (node["image_max_pixels"])
    source.image_max_pixels = static_cast<uint64_t>(check.integer(
        node["image_max_pixels"], prefix + "image_max_pixels", 1,
        max_pixels_limit));
  const uint64_t patch_area =
      static_cast<uint64_t>(source.patch_size) * source.patch_size;
  if (source.image_max_pixels < patch_area)
    check.fail(node["image_max_pixels"] ? node["image_max_pixels"] : node,
               prefix + "image_max_pixels",
               std::to_string(source.image_max_pixels) +
                   " pixels hold less than one patch of " +
                   std::to_string(source.patch_size) + "x" +
                   std::to_string(source.patch_size) +
                   "; raise it or lower patch_size");
  if (node["image_mean"])
    source.image_mean = parse_channels(node["image_mean"],
                                       prefix + "image_mean", check, false);
  if (node["image_std"])
    source.image_std = parse_channels(node["image_std"], prefix + "image_std",
                                      check, true);
}

source_config parse_source(const YAML::Node& node, size_t index,
                           const checker& check,
                           const std::set<std::string>& seen_names) {
  auto where = "sources[" + std::to_string(index) + "]";
  if (!node.IsMap())
    check.fail(node, where,
               "expected a map with name, format, paths, weight and workers");

  source_config source;
  if (!node["name"])
    check.fail(node, where + ".name", "missing; give every source a name");
  source.name = check.scalar<std::string>(node["name"], where + ".name",
                                          "string");
  if (source.name.empty() ||
      !std::all_of(source.name.begin(), source.name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
               c == '_';
      }))
    check.fail(node["name"], where + ".name",
               "invalid name '" + source.name +
                   "'; use letters, digits, '-' or '_'");
  if (seen_names.count(source.name) != 0)
    check.fail(node["name"], where + ".name",
               "duplicate source name '" + source.name +
                   "'; give each source its own name");

  auto prefix = "sources." + source.name + ".";
  check.check_keys(node, prefix, source_keys);

  if (!node["format"])
    check.fail(node, prefix + "format",
               "missing; use jsonl, text, indexed or webdataset");
  auto format = check.choice(node["format"], prefix + "format",
                             {"jsonl", "text", "indexed", "webdataset"});
  source.format = format == "jsonl"     ? source_format::jsonl
                  : format == "text"    ? source_format::text
                  : format == "indexed" ? source_format::indexed
                                        : source_format::webdataset;
  parse_image_keys(node, prefix, check, source);

  if (node["text_field"]) {
    if (source.format != source_format::jsonl)
      check.fail(node["text_field"], prefix + "text_field",
                 "only jsonl sources have a text field; remove it");
    source.text_field = check.scalar<std::string>(
        node["text_field"], prefix + "text_field", "string");
  }

  auto paths = node["paths"];
  if (!paths)
    check.fail(node, prefix + "paths", "missing; list one or more globs");
  if (paths.IsScalar())
    source.paths.push_back(paths.Scalar());
  else if (paths.IsSequence() && paths.size() > 0)
    for (const auto& entry : paths)
      source.paths.push_back(
          check.scalar<std::string>(entry, prefix + "paths", "string"));
  else
    check.fail(paths, prefix + "paths", "expected a glob or a list of globs");

  std::set<std::string> shards;
  for (const auto& pattern : source.paths) {
    size_t others = 0;
    auto matched = expand_glob(check.resolve(pattern), others);
    if (matched.empty() && others > 0)
      check.fail(paths, prefix + "paths",
                 "'" + check.resolve(pattern) + "' matches only " +
                     std::to_string(others) +
                     " folder(s) or other non-files; point the glob at the "
                     "files inside");
    if (matched.empty())
      check.fail(paths, prefix + "paths",
                 "no file matches '" + check.resolve(pattern) +
                     "'; fix the glob or fetch the data (scripts/fetch-demo-data "
                     "for the demo corpora)");
    shards.insert(matched.begin(), matched.end());
  }
  source.shards.assign(shards.begin(), shards.end());
  if (source.format == source_format::indexed)
    source.shards = indexed_prefixes(source.shards, paths, prefix, check);

  if (node["append_eos"]) {
    if (source.format != source_format::indexed)
      check.fail(node["append_eos"], prefix + "append_eos",
                 "only indexed sources hold token ids that may end with EOS; "
                 "remove it");
    source.append_eos =
        check.scalar<bool>(node["append_eos"], prefix + "append_eos",
                           "boolean (true or false)");
  }

  if (node["weight"]) {
    source.weight_schedule =
        parse_weight(node["weight"], prefix + "weight", check);
    source.weight = source.weight_schedule.at(0);
  }
  if (node["workers"])
    source.workers = check.integer(node["workers"], prefix + "workers", 1, 256);
  if (node["min_workers"])
    source.min_workers =
        check.integer(node["min_workers"], prefix + "min_workers", 1, 256);
  if (node["max_workers"])
    source.max_workers =
        check.integer(node["max_workers"], prefix + "max_workers", 1, 256);
  if (source.min_workers > source.max_workers)
    check.fail(node["min_workers"], prefix + "min_workers",
               "min_workers " + std::to_string(source.min_workers) +
                   " exceeds max_workers " +
                   std::to_string(source.max_workers) + "; swap or fix them");
  if (source.workers < source.min_workers || source.workers > source.max_workers) {
    if (node["workers"])
      check.fail(node["workers"], prefix + "workers",
                 "workers " + std::to_string(source.workers) +
                     " is outside min_workers..max_workers (" +
                     std::to_string(source.min_workers) + ".." +
                     std::to_string(source.max_workers) + ")");
    source.workers = std::clamp(source.workers, source.min_workers,
                                source.max_workers);
  }
  if (node["max_document_bytes"])
    source.max_document_bytes =
        check.integer(node["max_document_bytes"],
                      prefix + "max_document_bytes", 1, 1 << 30);
  return source;
}

void parse_topology(const YAML::Node& node, const checker& check,
                    job_config& config) {
  if (!node.IsMap())
    check.fail(node, "topology", "expected a map with dp, tp, pp and cp");
  check.check_keys(node, "topology.", topology_keys);
  auto& topology = config.topology;
  if (node["dp"])
    topology.dp = check.integer(node["dp"], "topology.dp", 1, 1 << 16);
  if (node["tp"])
    topology.tp = check.integer(node["tp"], "topology.tp", 1, 1 << 16);
  if (node["pp"])
    topology.pp = check.integer(node["pp"], "topology.pp", 1, 1 << 16);
  if (node["cp"])
    topology.cp = check.integer(node["cp"], "topology.cp", 1, 1 << 10);
  if (node["consumers"])
    topology.last_stage_consumes =
        check.choice(node["consumers"], "topology.consumers",
                     {"first_stage", "first_and_last_stages"}) ==
        "first_and_last_stages";
}

void parse_cost_model(const YAML::Node& node, const checker& check,
                      job_config& config) {
  if (!node.IsMap())
    check.fail(node, "cost_model",
               "expected a map with attention, linear and quadratic");
  check.check_keys(node, "cost_model.", cost_model_keys);
  if (node["attention"])
    config.cost.masking =
        check.choice(node["attention"], "cost_model.attention",
                     {"document", "row"}) == "document"
            ? cost_model::attention::document
            : cost_model::attention::row;
  auto coefficient = [&](const YAML::Node& value_node, const std::string& name) {
    double value = check.scalar<double>(value_node, name, "number");
    if (!std::isfinite(value) || value < 0)
      check.fail(value_node, name, "must be a finite number >= 0");
    return value;
  };
  if (node["linear"])
    config.cost.linear = coefficient(node["linear"], "cost_model.linear");
  if (node["quadratic"])
    config.cost.quadratic =
        coefficient(node["quadratic"], "cost_model.quadratic");
  if (auto vision = node["vision"]) {
    if (!vision.IsMap())
      check.fail(vision, "cost_model.vision",
                 "expected a map with linear and quadratic (cost per image "
                 "from its patch count)");
    check.check_keys(vision, "cost_model.vision.", vision_cost_keys);
    if (vision["linear"])
      config.cost.vision_linear =
          coefficient(vision["linear"], "cost_model.vision.linear");
    if (vision["quadratic"])
      config.cost.vision_quadratic =
          coefficient(vision["quadratic"], "cost_model.vision.quadratic");
  }
  if (config.cost.linear == 0 && config.cost.quadratic == 0)
    check.fail(node, "cost_model",
               "linear and quadratic are both zero; set at least one");
}

// Reads ranks, topology and the batch size (rows_per_rank or global_rows)
// and checks that they agree.
void parse_shape(const YAML::Node& root, const checker& check,
                 job_config& config) {
  if (root["topology"])
    parse_topology(root["topology"], check, config);
  if (root["ranks"]) {
    config.ranks = check.integer(root["ranks"], "ranks", 1, 1 << 16);
    if (root["topology"] && root["topology"]["dp"] &&
        config.ranks != config.topology.dp)
      check.fail(root["ranks"], "ranks",
                 "ranks " + std::to_string(config.ranks) +
                     " differs from topology.dp " +
                     std::to_string(config.topology.dp) +
                     "; ranks counts data-parallel replicas, so drop one of "
                     "them");
  } else if (root["topology"]) {
    config.ranks = config.topology.dp;
  }
  config.topology.dp = config.ranks;

  if (root["rows_per_rank"] && root["global_rows"])
    check.fail(root["global_rows"], "global_rows",
               "set either rows_per_rank or global_rows, not both");
  if (root["rows_per_rank"])
    config.rows_per_rank = check.integer(root["rows_per_rank"],
                                         "rows_per_rank", 1, 1 << 16);
  if (root["global_rows"]) {
    int global = check.integer(root["global_rows"], "global_rows", 1, 1 << 24);
    if (global % config.ranks != 0)
      check.fail(root["global_rows"], "global_rows",
                 std::to_string(global) + " rows do not divide by " +
                     std::to_string(config.ranks) +
                     " ranks; use a multiple of the rank count");
    config.rows_per_rank = global / config.ranks;
  }

  const int cp = config.topology.cp;
  const auto length_node =
      root["sequence_length"] ? root["sequence_length"] : root;
  const uint64_t rank_tokens =
      static_cast<uint64_t>(config.rows_per_rank) * config.shortest_length();
  auto all_lengths = config.varies_length()
                         ? config.lengths.lengths()
                         : std::vector<uint32_t>{config.shortest_length()};
  for (uint32_t length : all_lengths) {
    if (cp > 1 && length % (2 * cp) != 0)
      check.fail(length_node, "sequence_length",
                 std::to_string(length) + " does not divide into 2 * cp = " +
                     std::to_string(2 * cp) +
                     " equal chunks; use a multiple of " +
                     std::to_string(2 * cp));
    // Every step has the same token budget, so each length must split it
    // into whole rows.
    if (rank_tokens % length != 0)
      check.fail(length_node, "sequence_length",
                 "length " + std::to_string(length) + " does not divide the " +
                     std::to_string(rank_tokens) +
                     " tokens each rank gets per step (" +
                     (root["global_rows"] ? "global_rows / ranks"
                                          : "rows_per_rank") +
                     " rows of the shortest length); use lengths that "
                     "divide it, or more rows");
  }
}

job_config parse_tree(YAML::Node root, const std::string& origin,
                      const std::string& base_dir,
                      const std::vector<config_override>& overrides) {
  checker check(origin, base_dir);
  if (!root.IsMap())
    check.fail(root, "(top level)", "expected a map of settings");
  for (const auto& item : overrides)
    apply_override(root, item, check);
  check.check_keys(root, "", top_level_keys);

  job_config config;
  config.config_path = origin;
  if (root["seed"])
    config.seed = check.scalar<uint64_t>(root["seed"], "seed",
                                         "non-negative integer");
  if (root["sequence_length"]) {
    config.lengths = parse_lengths(root["sequence_length"], check);
    config.sequence_length = static_cast<int>(config.lengths.longest());
  }
  parse_shape(root, check, config);
  if (root["bind"])
    config.bind = check.scalar<std::string>(root["bind"], "bind", "string");
  if (root["base_port"])
    config.base_port = check.integer(root["base_port"], "base_port", 1, 65535);
  if (config.base_port + config.ranks - 1 > 65535)
    check.fail(root["base_port"], "base_port",
               "base_port + ranks - 1 exceeds 65535; lower base_port");
  if (root["planner_port"])
    config.planner_port =
        check.integer(root["planner_port"], "planner_port", 0, 65535);
  if (root["metrics_port"]) {
    config.metrics_port =
        check.integer(root["metrics_port"], "metrics_port", 0, 65535);
    bool rank_port = config.metrics_port >= config.base_port &&
                     config.metrics_port < config.base_port + config.ranks;
    if (config.metrics_port != 0 &&
        (rank_port || config.metrics_port == config.planner_port))
      check.fail(root["metrics_port"], "metrics_port",
                 "port " + std::to_string(config.metrics_port) +
                     " is also the planner's or a rank's port; choose "
                     "another");
  }
  if (root["loader_nodes"])
    config.loader_nodes =
        check.integer(root["loader_nodes"], "loader_nodes", 1, 1 << 16);
  if (root["constructor_nodes"])
    config.constructor_nodes = check.integer(root["constructor_nodes"],
                                             "constructor_nodes", 1, 1 << 16);
  if (root["node_timeout_ms"])
    config.node_timeout_ms = check.integer(root["node_timeout_ms"],
                                           "node_timeout_ms", 100, 3600000);
  if (root["on_bad_input"]) {
    auto policy = check.choice(root["on_bad_input"], "on_bad_input",
                               {"skip", "quarantine", "fail"});
    config.on_bad_input = policy == "skip"         ? bad_input_policy::skip
                          : policy == "quarantine" ? bad_input_policy::quarantine
                                                   : bad_input_policy::fail;
  }
  if (root["image_token_id"]) {
    config.image_token_id = check.integer(root["image_token_id"],
                                          "image_token_id", 0, INT32_MAX);
    if (config.image_token_id == 50256)
      check.fail(root["image_token_id"], "image_token_id",
                 "50256 is GPT-2's end-of-text token; use an id outside the "
                 "text vocabulary, such as 50257");
  }
  if (root["mix_by"])
    config.mix_by =
        check.choice(root["mix_by"], "mix_by", {"tokens", "documents"}) ==
                "tokens"
            ? mix_unit::tokens
            : mix_unit::documents;
  if (root["plan_ahead"])
    config.plan_ahead = check.integer(root["plan_ahead"], "plan_ahead", 1, 1024);
  if (root["startup_prefetch_steps"]) {
    // Before a trainer receives a batch, the planner plans plan_ahead
    // steps and no more, so a longer lead would never be built.
    const auto& node = root["startup_prefetch_steps"];
    config.startup_prefetch_steps = check.integer(
        node, "startup_prefetch_steps", std::numeric_limits<int>::min(),
        std::numeric_limits<int>::max());
    if (config.startup_prefetch_steps < 0 ||
        config.startup_prefetch_steps > config.plan_ahead)
      check.fail(node, "startup_prefetch_steps",
                 "value " + std::to_string(config.startup_prefetch_steps) +
                     " is out of range; use 0 to " +
                     std::to_string(config.plan_ahead) + " (plan_ahead" +
                     check.origin_of("plan_ahead") +
                     "), because the planner plans no further before the "
                     "trainers receive a batch");
  }
  if (root["buffer_documents"])
    config.buffer_documents = check.integer(
        root["buffer_documents"], "buffer_documents", 1, 1 << 24);
  if (root["buffer_bytes"])
    config.buffer_bytes = check.integer(root["buffer_bytes"], "buffer_bytes",
                                        1 << 16, std::numeric_limits<int>::max());
  if (root["max_document_bytes"])
    config.max_document_bytes = check.integer(
        root["max_document_bytes"], "max_document_bytes", 1, 1 << 30);
  if (root["max_request_bytes"])
    config.max_request_bytes = check.integer(
        root["max_request_bytes"], "max_request_bytes", 256, 1 << 20);
  if (root["max_client_requests"])
    config.max_client_requests = check.integer(
        root["max_client_requests"], "max_client_requests", 1, 1 << 16);
  if (root["read_range_bytes"])
    config.read_range_bytes = check.integer(
        root["read_range_bytes"], "read_range_bytes", 4096, 1 << 30);
  if (root["image_read_range_bytes"])
    config.image_read_range_bytes =
        check.integer(root["image_read_range_bytes"], "image_read_range_bytes",
                      4096, 1 << 30);
  if (root["worker_nice"])
    config.worker_nice =
        check.integer(root["worker_nice"], "worker_nice", 0, 19);
  if (root["checkpoint_dir"])
    config.checkpoint_dir = check.resolve(check.scalar<std::string>(
        root["checkpoint_dir"], "checkpoint_dir", "string"));
  if (root["checkpoint_every"])
    config.checkpoint_every = check.integer(root["checkpoint_every"],
                                            "checkpoint_every", 1, 1 << 24);
  if (root["checkpoint_keep"])
    config.checkpoint_keep = check.integer(root["checkpoint_keep"],
                                           "checkpoint_keep", 1, 1 << 20);
  if (root["log_level"])
    config.log_level = check.choice(root["log_level"], "log_level",
                                    {"trace", "debug", "info", "warn", "error"});

  if (!root["tokenizer"])
    check.fail(root, "tokenizer",
               "missing; set it to the folder with GPT-2's encoder.json and "
               "vocab.bpe");
  config.tokenizer = check.resolve(
      check.scalar<std::string>(root["tokenizer"], "tokenizer", "string"));
  for (const char* file : {"encoder.json", "vocab.bpe"})
    if (!is_regular_file_or_false(fs::path(config.tokenizer) / file))
      check.fail(root["tokenizer"], "tokenizer",
                 std::string("file ") + config.tokenizer + "/" + file +
                     " not found; point tokenizer at the GPT-2 files "
                     "(scripts/fetch-demo-data fetches them)");

  // A batch travels as one FlatBuffers message, which must stay below
  // 2 GiB; each position takes about 13 bytes (token, label, position id,
  // loss mask).
  const uint64_t batch_bytes = static_cast<uint64_t>(config.rows_per_rank) *
                               config.shortest_length() * 13;
  if (batch_bytes > (uint64_t{1} << 30))
    check.fail(root["sequence_length"] ? root["sequence_length"] : root,
               "sequence_length",
               "rows_per_rank * sequence_length makes batches of about " +
                   std::to_string(batch_bytes >> 20) +
                   " MiB; keep them under 1024 MiB with fewer or shorter rows");
  if (config.planner_port != 0 && config.planner_port >= config.base_port &&
      config.planner_port < config.base_port + config.ranks)
    check.fail(root["planner_port"], "planner_port",
               "port " + std::to_string(config.planner_port) +
                   " is also a rank's port (base_port + rank); choose another");

  if (root["cost_model"])
    parse_cost_model(root["cost_model"], check, config);
  if (root["autoscale"])
    parse_autoscale(root["autoscale"], check, config);
  if (root["balancer"]) {
    auto name = check.choice(root["balancer"], "balancer",
                             {"best", "lpt", "kk", "tokens", "consecutive"});
    config.balancer = parse_balance_method(name);
  }

  auto sources = root["sources"];
  if (!sources || !sources.IsSequence() || sources.size() == 0)
    check.fail(sources ? sources : root, "sources",
               "expected a non-empty list of sources");
  std::set<std::string> names;
  for (size_t i = 0; i < sources.size(); ++i) {
    config.sources.push_back(parse_source(sources[i], i, check, names));
    names.insert(config.sources.back().name);
  }

  for (size_t i = 0; i < config.sources.size(); ++i) {
    const auto& source = config.sources[i];
    if (source.format != source_format::webdataset)
      continue;
    const uint64_t smallest =
        uint64_t{max_image_positions(source)} + min_caption_positions;
    if (smallest > static_cast<uint64_t>(config.shortest_length()))
      check.fail(sources[i]["image_max_pixels"] ? sources[i]["image_max_pixels"]
                                                : sources[i],
                 "sources." + source.name + ".image_max_pixels",
                 "an image may take " +
                     std::to_string(max_image_positions(source)) +
                     " positions (image_max_pixels / patch_size^2), which "
                     "with a 1-token caption and EOS exceeds sequence_length " +
                     std::to_string(config.shortest_length()) +
                     " (the shortest row length); lower image_max_pixels, "
                     "raise patch_size or raise sequence_length");
  }

  for (uint64_t step : weight_points_from(config, 0)) {
    double total_weight = 0;
    for (const auto& source : config.sources)
      total_weight += source.weight_at(step);
    if (!(total_weight > 0))
      check.fail(sources, "sources",
                 "all weights are zero at step " + std::to_string(step) +
                     "; give at least one source a positive weight there");
  }
  return config;
}

}  // namespace

config_override parse_override(const std::string& text) {
  auto equals = text.find('=');
  if (equals == std::string::npos || equals == 0)
    throw error(errc::invalid_config,
                "--set " + text + ": expected KEY=VALUE, for example "
                                  "sources.mail.workers=4");
  return {text.substr(0, equals), text.substr(equals + 1)};
}

job_config parse_config(const std::string& yaml_text, const std::string& origin,
                        const std::string& base_dir,
                        const std::vector<config_override>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw error(errc::invalid_config,
                origin + ":" + std::to_string(e.mark.line + 1) +
                    ": invalid YAML: " + e.msg + "; fix the syntax");
  }
  return parse_tree(root, origin, base_dir, overrides);
}

job_config load_config(const std::string& path,
                       const std::vector<config_override>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw error(errc::invalid_config,
                path + ": cannot read the config file; check the path");
  std::stringstream text;
  text << in.rdbuf();
  auto base_dir = fs::absolute(path).parent_path().string();
  return parse_config(text.str(), path, base_dir, overrides);
}

std::set<uint64_t> weight_points_from(const job_config& config, uint64_t from) {
  std::set<uint64_t> steps = {from};
  for (const auto& source : config.sources)
    for (const auto& point : source.weight_schedule.points)
      if (point.step > from)
        steps.insert(point.step);
  return steps;
}

const char* to_string(source_format format) {
  switch (format) {
    case source_format::jsonl:
      return "jsonl";
    case source_format::text:
      return "text";
    case source_format::indexed:
      return "indexed";
    case source_format::webdataset:
      return "webdataset";
  }
  return "unknown";
}

uint32_t max_image_positions(const source_config& source) {
  // The same bound as sources::max_image_patches, which planner code may
  // not link: decode_image keeps the patch count at or below it.
  const uint64_t area =
      static_cast<uint64_t>(source.patch_size) * source.patch_size;
  const uint64_t limit = area == 0 ? 1 : source.image_max_pixels / area;
  return static_cast<uint32_t>(std::clamp<uint64_t>(limit, 1, UINT32_MAX));
}

const char* to_string(mix_unit unit) {
  return unit == mix_unit::tokens ? "tokens" : "documents";
}

const char* to_string(bad_input_policy policy) {
  switch (policy) {
    case bad_input_policy::skip:
      return "skip";
    case bad_input_policy::quarantine:
      return "quarantine";
    default:
      return "fail";
  }
}

}  // namespace overlord::planner
