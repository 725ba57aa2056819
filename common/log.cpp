#include "common/log.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <ctime>
#include <map>
#include <mutex>

#include "common/error.hpp"

namespace overlord {

namespace {

// Loggers that log-level commands may address; get_logger() accepts any
// name, but components use these.
const std::vector<std::string> component_loggers = {
    "actors", "checkpoint", "planner", "sources", "transport"};

constexpr const char* text_pattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v";

std::mutex registry_mutex;
spdlog::level::level_enum default_level = spdlog::level::info;
std::map<std::string, spdlog::level::level_enum> logger_levels;
bool json_format = false;

class json_formatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    auto level = spdlog::level::to_string_view(msg.level);
    auto line = format_json_line(
        msg.time, std::string_view(level.data(), level.size()),
        std::string_view(msg.logger_name.data(), msg.logger_name.size()),
        std::string_view(msg.payload.data(), msg.payload.size()));
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<json_formatter>();
  }
};

// Applies the process-wide format; the caller holds registry_mutex.
void apply_format(spdlog::logger& logger) {
  if (json_format)
    logger.set_formatter(std::make_unique<json_formatter>());
  else
    logger.set_pattern(text_pattern);
}

spdlog::level::level_enum parse_level(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off")
    throw error(errc::invalid_config,
                "unknown log level '" + level +
                    "': use trace, debug, info, warn, error or off");
  return parsed;
}

void check_logger_name(const std::string& logger) {
  if (logger == "all")
    return;
  for (const auto& name : component_loggers)
    if (name == logger)
      return;
  std::string names;
  for (const auto& name : component_loggers)
    names += name + ", ";
  throw error(errc::invalid_config, "unknown logger '" + logger + "': use " +
                                        names + "or all");
}

bool is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

}  // namespace

std::shared_ptr<spdlog::logger> get_logger(const std::string& name) {
  std::lock_guard<std::mutex> guard(registry_mutex);
  if (auto existing = spdlog::get(name))
    return existing;
  // Logs go to stderr so that tools can keep stdout for their output.
  auto logger = spdlog::stderr_color_mt(name);
  apply_format(*logger);
  auto level = logger_levels.find(name);
  logger->set_level(level == logger_levels.end() ? default_level
                                                 : level->second);
  return logger;
}

void set_log_level(const std::string& level) {
  auto parsed = parse_level(level);
  std::lock_guard<std::mutex> guard(registry_mutex);
  default_level = parsed;
  logger_levels.clear();
  spdlog::set_level(parsed);
}

void check_logger_level(const std::string& logger, const std::string& level) {
  check_logger_name(logger);
  parse_level(level);
}

void set_logger_level(const std::string& logger, const std::string& level) {
  check_logger_level(logger, level);
  if (logger == "all") {
    set_log_level(level);
    return;
  }
  auto parsed = parse_level(level);
  std::lock_guard<std::mutex> guard(registry_mutex);
  logger_levels[logger] = parsed;
  if (auto existing = spdlog::get(logger))
    existing->set_level(parsed);
}

std::string describe_log_levels() {
  std::lock_guard<std::mutex> guard(registry_mutex);
  std::string out;
  for (const auto& name : component_loggers) {
    auto level = default_level;
    if (auto existing = spdlog::get(name))
      level = existing->level();
    else if (logger_levels.count(name))
      level = logger_levels.at(name);
    auto text = spdlog::level::to_string_view(level);
    out += (out.empty() ? "" : " ") + name + "=" +
           std::string(text.data(), text.size());
  }
  return out;
}

void set_log_format(const std::string& format) {
  if (format != "text" && format != "json")
    throw error(errc::invalid_config,
                "unknown log format '" + format + "': use text or json");
  std::lock_guard<std::mutex> guard(registry_mutex);
  json_format = format == "json";
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& logger) {
    apply_format(*logger);
  });
}

std::vector<std::pair<std::string, std::string>> extract_fields(
    std::string_view message) {
  std::vector<std::pair<std::string, std::string>> fields;
  size_t i = 0;
  while (i < message.size()) {
    // A key starts a word: at the beginning, or after a space or '('.
    bool word_start = i == 0 || message[i - 1] == ' ' || message[i - 1] == '(';
    if (!word_start || !is_key_char(message[i])) {
      ++i;
      continue;
    }
    size_t key_end = i;
    while (key_end < message.size() && is_key_char(message[key_end]))
      ++key_end;
    if (key_end == message.size() || message[key_end] != '=') {
      i = key_end;
      continue;
    }
    size_t value_end = key_end + 1;
    while (value_end < message.size() && message[value_end] != ' ')
      ++value_end;
    auto key = std::string(message.substr(i, key_end - i));
    auto value =
        std::string(message.substr(key_end + 1, value_end - key_end - 1));
    while (!value.empty() && std::string_view(",;:)").find(value.back()) !=
                                 std::string_view::npos)
      value.pop_back();
    bool reserved = key == "time" || key == "level" || key == "logger" ||
                    key == "message";
    bool seen = false;
    for (const auto& field : fields)
      seen = seen || field.first == key;
    if (!value.empty() && !reserved && !seen)
      fields.emplace_back(std::move(key), std::move(value));
    i = value_end;
  }
  return fields;
}

std::string format_json_line(std::chrono::system_clock::time_point time,
                             std::string_view level, std::string_view logger,
                             std::string_view message) {
  auto seconds = std::chrono::system_clock::to_time_t(time);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                    time.time_since_epoch())
                    .count() %
                1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[80];  // room for any int the format could print
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                utc.tm_min, utc.tm_sec, static_cast<int>(millis));

  rapidjson::StringBuffer text;
  rapidjson::Writer<rapidjson::StringBuffer> json(text);
  auto write = [&](std::string_view key, std::string_view value) {
    json.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    json.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  json.StartObject();
  write("time", stamp);
  write("level", level);
  write("logger", logger);
  write("message", message);
  for (const auto& [key, value] : extract_fields(message))
    write(key, value);
  json.EndObject();
  return text.GetString();
}

}  // namespace overlord
