// Log controls: key=value extraction, JSON lines and per-logger levels.
#include <catch2/catch.hpp>

#include <rapidjson/document.h>

#include "common/error.hpp"
#include "common/log.hpp"

using overlord::extract_fields;
using fields = std::vector<std::pair<std::string, std::string>>;

TEST_CASE("fields are extracted from key=value words", "[log]") {
  CHECK(extract_fields("node=loader-1 role=loader left the job: no heartbeat") ==
        fields{{"node", "loader-1"}, {"role", "loader"}});
  CHECK(extract_fields("source=mail could not start on node=c-2: taken") ==
        fields{{"source", "mail"}, {"node", "c-2"}});
  CHECK(extract_fields("planner listening on address=127.0.0.1:7070") ==
        fields{{"address", "127.0.0.1:7070"}});
  CHECK(extract_fields("moved rank=1(to its shadow)") ==
        fields{{"rank", "1(to"}});
  CHECK(extract_fields("skipped (shard=a.jsonl)") ==
        fields{{"shard", "a.jsonl"}});
}

TEST_CASE("extraction skips reserved, repeated and empty keys", "[log]") {
  CHECK(extract_fields("level=9 rank=0 rank=1 step= x") ==
        fields{{"rank", "0"}});
  CHECK(extract_fields("a==b") == fields{{"a", "=b"}});
  CHECK(extract_fields("no fields here, 3 = 4").empty());
  CHECK(extract_fields("Upper=1 x=y=z").size() == 1);
}

TEST_CASE("json line holds time, level, logger, message and fields",
          "[log]") {
  auto time = std::chrono::system_clock::time_point(
      std::chrono::milliseconds(1700000000123));
  auto line = overlord::format_json_line(
      time, "warning", "actors", "rank=0 step=12 said \"hi\"\n");
  rapidjson::Document json;
  json.Parse(line.c_str());
  REQUIRE(!json.HasParseError());
  CHECK(std::string(json["time"].GetString()) == "2023-11-14T22:13:20.123Z");
  CHECK(std::string(json["level"].GetString()) == "warning");
  CHECK(std::string(json["logger"].GetString()) == "actors");
  CHECK(std::string(json["message"].GetString()) ==
        "rank=0 step=12 said \"hi\"\n");
  CHECK(std::string(json["rank"].GetString()) == "0");
  CHECK(std::string(json["step"].GetString()) == "12");
  CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("logger levels change one logger at a time", "[log]") {
  overlord::set_log_level("info");
  auto sources = overlord::get_logger("sources");
  auto actors = overlord::get_logger("actors");
  overlord::set_logger_level("sources", "debug");
  CHECK(sources->level() == spdlog::level::debug);
  CHECK(actors->level() == spdlog::level::info);
  // A logger created later takes its own level.
  overlord::set_logger_level("transport", "error");
  CHECK(overlord::get_logger("transport")->level() == spdlog::level::err);
  CHECK(overlord::describe_log_levels() ==
        "actors=info checkpoint=info planner=info sources=debug "
        "transport=error");
  overlord::set_logger_level("all", "warn");
  CHECK(sources->level() == spdlog::level::warn);
  CHECK(overlord::describe_log_levels() ==
        "actors=warning checkpoint=warning planner=warning sources=warning "
        "transport=warning");
}

TEST_CASE("unknown loggers, levels and formats are rejected", "[log]") {
  CHECK_THROWS_WITH(overlord::set_logger_level("sourcez", "debug"),
                    Catch::Contains("unknown logger 'sourcez'"));
  CHECK_THROWS_WITH(overlord::set_logger_level("sources", "loud"),
                    Catch::Contains("unknown log level 'loud'"));
  CHECK_THROWS_WITH(overlord::set_log_format("xml"),
                    Catch::Contains("unknown log format 'xml'"));
}
