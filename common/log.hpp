// One spdlog logger per component folder ("actors", "planner", "sources",
// "transport", "client", "config"). Lines carry key=value ids such as
// source=, rank=, step= and node= so operators can grep them.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace overlord {

// Returns the logger named `name`, creating it on first use with the
// process-wide pattern and level. Thread-safe.
std::shared_ptr<spdlog::logger> get_logger(const std::string& name);

// Sets the level of every existing and future logger ("debug", "info",
// "warn", "error"). Throws overlord::error for an unknown level name.
void set_log_level(const std::string& level);

}  // namespace overlord
