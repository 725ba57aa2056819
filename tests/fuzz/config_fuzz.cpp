// Fuzz target: the job config loader (planner::parse_config) on arbitrary
// bytes. Leading lines of the form "#set KEY=VALUE" (YAML comments) are
// also passed as --set overrides, so the override path is fuzzed too.
// Relative paths resolve against a scratch folder that contains a stand-in
// tokenizer folder and two shards. Properties checked for every input:
// - the loader returns a config or throws overlord::error(invalid_config)
//   whose message starts with the file name or the --set flag; no other
//   exception escapes;
// - a returned config satisfies every documented range and cross-key rule.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "planner/config.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using overlord::planner::config_override;
using overlord::planner::job_config;

constexpr const char* origin = "fuzz.yaml";

std::string base_dir;

// Splits off the overrides in the leading "#set KEY=VALUE" lines.
std::vector<config_override> read_overrides(const std::string& text) {
  std::vector<config_override> overrides;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line) && line.rfind("#set ", 0) == 0) {
    try {
      overrides.push_back(overlord::planner::parse_override(line.substr(5)));
    } catch (const overlord::error&) {
      // A line without '=' is only a comment to the loader.
    }
  }
  return overrides;
}

void check_config(const job_config& config) {
  FUZZ_REQUIRE(config.ranks >= 1 && config.rows_per_rank >= 1,
               "ranks or rows_per_rank below 1");
  FUZZ_REQUIRE(config.topology.dp == config.ranks, "topology.dp != ranks");
  FUZZ_REQUIRE(config.sequence_length >= 1, "sequence_length below 1");
  FUZZ_REQUIRE(config.topology.cp == 1 ||
                   config.sequence_length % (2 * config.topology.cp) == 0,
               "sequence_length does not divide into 2 * cp chunks");
  FUZZ_REQUIRE(config.base_port >= 1 &&
                   config.base_port + config.ranks - 1 <= 65535,
               "a rank port is outside 1..65535");
  FUZZ_REQUIRE(config.planner_port == 0 ||
                   config.planner_port < config.base_port ||
                   config.planner_port >= config.base_port + config.ranks,
               "planner_port is also a rank's port");
  FUZZ_REQUIRE(static_cast<uint64_t>(config.rows_per_rank) *
                       static_cast<uint64_t>(config.sequence_length) * 13 <=
                   (uint64_t{1} << 30),
               "batches exceed the size limit");
  FUZZ_REQUIRE(config.node_timeout_ms >= 100 && config.plan_ahead >= 1 &&
                   config.buffer_documents >= 1 &&
                   config.max_document_bytes >= 1 &&
                   config.checkpoint_every >= 1 && config.checkpoint_keep >= 1,
               "a count setting is below its minimum");
  FUZZ_REQUIRE(config.startup_prefetch_steps >= 0 &&
                   config.startup_prefetch_steps <= config.plan_ahead,
               "startup_prefetch_steps is outside 0..plan_ahead");
  FUZZ_REQUIRE(std::isfinite(config.cost.linear) && config.cost.linear >= 0 &&
                   std::isfinite(config.cost.quadratic) &&
                   config.cost.quadratic >= 0 &&
                   (config.cost.linear > 0 || config.cost.quadratic > 0),
               "invalid cost model");
  FUZZ_REQUIRE(!config.sources.empty(), "no sources");

  std::set<std::string> names;
  double total_weight = 0;
  for (const auto& source : config.sources) {
    FUZZ_REQUIRE(!source.name.empty() && names.insert(source.name).second,
                 "empty or duplicate source name '" + source.name + "'");
    FUZZ_REQUIRE(std::isfinite(source.weight) && source.weight >= 0,
                 "invalid weight of source " + source.name);
    FUZZ_REQUIRE(source.workers >= 1 && source.workers <= 256,
                 "workers outside 1..256 in source " + source.name);
    FUZZ_REQUIRE(!source.shards.empty(), "no shards in source " + source.name);
    for (std::size_t i = 1; i < source.shards.size(); ++i)
      FUZZ_REQUIRE(source.shards[i - 1] < source.shards[i],
                   "shards not sorted and unique in source " + source.name);
    total_weight += source.weight;
  }
  FUZZ_REQUIRE(total_weight > 0, "all weights are zero");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  namespace fs = std::filesystem;
  const fs::path base = overlord::fuzzing::scratch_dir() / "config";
  fs::create_directories(base / "gpt2");
  fs::create_directories(base / "shards");
  overlord::fuzzing::write_scratch_file("config/gpt2/encoder.json", "{}");
  overlord::fuzzing::write_scratch_file("config/gpt2/vocab.bpe", "");
  overlord::fuzzing::write_scratch_file("config/shards/a.jsonl",
                                        "{\"text\":\"a\"}\n");
  overlord::fuzzing::write_scratch_file("config/shards/b.txt", "b\n");
  base_dir = base.string();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto overrides = read_overrides(text);
  try {
    check_config(
        overlord::planner::parse_config(text, origin, base_dir, overrides));
  } catch (const overlord::error& e) {
    const std::string message = e.what();
    FUZZ_REQUIRE(e.code() == overlord::errc::invalid_config,
                 "unexpected error code: " + message);
    FUZZ_REQUIRE(message.rfind(origin, 0) == 0 ||
                     message.rfind("--set ", 0) == 0,
                 "message names neither the file nor the flag: " + message);
  }
  return 0;
}
