// One spdlog logger per component folder ("actors", "checkpoint",
// "planner", "sources", "transport"). Lines carry key=value ids such as
// source=, rank=, step= and node= so operators can grep them. Lines go to
// stderr as text or, after set_log_format("json"), as one JSON object
// each. Levels can change per logger while the process runs.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace overlord {

// Returns the logger named `name`, creating it on first use with the
// process-wide format and the level set for that name. Thread-safe.
std::shared_ptr<spdlog::logger> get_logger(const std::string& name);

// Sets the level of every existing and future logger ("trace", "debug",
// "info", "warn", "error" or "off"), dropping per-logger levels. Throws
// overlord::error(invalid_config) for an unknown level name.
void set_log_level(const std::string& level);

// Sets the level of one logger, now and when it is created later; "all"
// is the same as set_log_level. Throws overlord::error(invalid_config)
// for an unknown logger or level, naming the valid ones.
void set_logger_level(const std::string& logger, const std::string& level);

// Throws like set_logger_level would, without changing anything.
void check_logger_level(const std::string& logger, const std::string& level);

// The component loggers' current levels, e.g. "actors=info planner=info
// sources=debug ...", in name order.
std::string describe_log_levels();

// "text" (the default): "TIME LEVEL [LOGGER] MESSAGE". "json": one object
// per line with time (UTC, ISO 8601), level, logger, message and the
// message's key=value ids as string fields. Applies to every logger.
// Throws overlord::error(invalid_config) for another name.
void set_log_format(const std::string& format);

// Extracts the key=value pairs of a log message in order, keeping the
// first occurrence of each key. A key is lower-case letters, digits and
// '_' at the start of a word. Its value runs to the next space, without
// trailing ',', ';', ':' or ')'. Keys that a JSON line sets itself (time,
// level, logger, message) are left out.
std::vector<std::pair<std::string, std::string>> extract_fields(
    std::string_view message);

// One JSON log line (without the line feed).
std::string format_json_line(std::chrono::system_clock::time_point time,
                             std::string_view level, std::string_view logger,
                             std::string_view message);

}  // namespace overlord
