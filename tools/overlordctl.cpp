// overlordctl: the admin console. It talks to the planner's admin actor.
//
//   overlordctl --planner HOST:PORT status [--json]
//   overlordctl --planner HOST:PORT top [--interval SECONDS] [--iterations N]
//   overlordctl --planner HOST:PORT set-weights NAME=WEIGHT ...
//   overlordctl --planner HOST:PORT drain NODE
//   overlordctl --planner HOST:PORT log-level [--node ID] LOGGER LEVEL

#include <rapidjson/document.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "tools/admin_client.hpp"

namespace {

constexpr const char* usage =
    "usage: overlordctl --planner HOST:PORT COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  status [--json]          nodes, sources, ranks and imbalance\n"
    "  top [--interval S] [--iterations N]\n"
    "                           status, refreshed every S seconds (1)\n"
    "  set-weights NAME=W ...   change mixture weights from the next step\n"
    "  drain NODE               move a node's work elsewhere and stop it\n"
    "  log-level [--node ID] LOGGER LEVEL\n"
    "                           set a logger (actors, checkpoint, planner,\n"
    "                           sources, transport or all) to trace, debug,\n"
    "                           info, warn, error or off on one node, or on\n"
    "                           the planner and every node\n"
    "\n"
    "  --timeout SECONDS        wait this long for the planner (10)\n"
    "  --tls-cert FILE          PEM certificate for a planner that uses TLS\n"
    "  --tls-key FILE           PEM private key of --tls-cert\n"
    "  --tls-ca FILE            PEM CA certificate the planner's must verify\n"
    "                           against\n";

using overlord::errc;
using overlord::error;

double parse_positive(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    double value = std::stod(text, &used);
    if (used == text.size() && value > 0)
      return value;
  } catch (const std::exception&) {
  }
  throw error(errc::invalid_config,
              flag + " expects a positive number, got '" + text + "'");
}

double number_or(const rapidjson::Value& object, const char* key,
                 double fallback = 0) {
  if (object.IsObject() && object.HasMember(key) && object[key].IsNumber())
    return object[key].GetDouble();
  return fallback;
}

std::string string_or(const rapidjson::Value& object, const char* key) {
  if (object.IsObject() && object.HasMember(key) && object[key].IsString())
    return object[key].GetString();
  return "";
}

// Renders the status JSON as tables for a terminal.
std::string render_status(const std::string& json) {
  rapidjson::Document status;
  status.Parse(json.c_str());
  if (status.HasParseError() || !status.IsObject())
    throw error(errc::invalid_input, "the planner sent invalid status JSON");

  std::string out;
  char line[512];
  std::snprintf(line, sizeof line,
                "next step %.0f   imbalance %.3f (mean %.3f, worst %.3f)   "
                "padding %.2f%%   failovers %.0f\n",
                number_or(status, "next_step"), number_or(status, "imbalance"),
                number_or(status, "imbalance_mean"),
                number_or(status, "imbalance_max"),
                100 * number_or(status, "padding_fraction"),
                number_or(status, "failovers"));
  out += line;

  out += "log levels: planner " + string_or(status, "log_levels") + "\n";

  out += "\nNODE                           ROLE         STATE     PID      ADDRESS               LOG LEVELS\n";
  for (const auto& node : status["nodes"].GetArray()) {
    std::snprintf(line, sizeof line, "%-30s %-12s %-9s %-8.0f %-21s %s\n",
                  string_or(node, "id").c_str(), string_or(node, "role").c_str(),
                  string_or(node, "state").c_str(), number_or(node, "pid"),
                  string_or(node, "address").c_str(),
                  string_or(node, "log_levels").c_str());
    out += line;
  }

  out += "\nSOURCE           WEIGHT   WORKERS   DOCS/S     LATENCY MS  BUFFERED  NODE\n";
  for (const auto& source : status["sources"].GetObject()) {
    const auto& value = source.value;
    std::snprintf(line, sizeof line, "%-16s %-8.3g %-9.0f %-10.1f %-11.2f %-9.0f %s\n",
                  source.name.GetString(), number_or(value, "weight"),
                  number_or(value, "workers"), number_or(value, "docs_per_s"),
                  number_or(value, "latency_ms"), number_or(value, "buffered"),
                  string_or(value, "node").c_str());
    out += line;
  }

  if (status.HasMember("autoscale") && status["autoscale"].IsObject()) {
    const auto& autoscale = status["autoscale"];
    const bool enabled =
        autoscale.HasMember("enabled") && autoscale["enabled"].IsBool() &&
        autoscale["enabled"].GetBool();
    if (enabled) {
      std::snprintf(line, sizeof line,
                    "\nAUTOSCALE on: every %.0f ms, cpu_budget %.0f (0: the "
                    "node's cores), %.0f decisions so far\n",
                    number_or(autoscale, "interval_ms"),
                    number_or(autoscale, "cpu_budget"),
                    number_or(autoscale, "decisions"));
      out += line;
      for (const auto& source : status["sources"].GetObject()) {
        const auto& value = source.value;
        const std::string last = string_or(value, "autoscale");
        std::snprintf(line, sizeof line, "%-16s workers %.0f..%.0f, ",
                      source.name.GetString(), number_or(value, "min_workers"),
                      number_or(value, "max_workers"));
        out += line;
        out += last.empty() ? "no change yet" : "last change " + last;
        out += "\n";
      }
    } else {
      out += "\nAUTOSCALE off\n";
    }
  }

  out += "\nRANK  STEP      NODE                           ENDPOINT\n";
  for (const auto& rank : status["ranks"].GetArray()) {
    std::snprintf(line, sizeof line, "%-5.0f %-9.0f %-30s %s\n",
                  number_or(rank, "rank"), number_or(rank, "step"),
                  string_or(rank, "node").c_str(),
                  string_or(rank, "endpoint").c_str());
    out += line;
  }
  if (status.HasMember("weight_changes") &&
      !status["weight_changes"].GetArray().Empty()) {
    out += "\nWEIGHT CHANGES\n";
    for (const auto& change : status["weight_changes"].GetArray()) {
      // Only the sources a change set; the others keep their schedules.
      std::set<std::string> set_sources;
      if (change.HasMember("set_sources"))
        for (const auto& name : change["set_sources"].GetArray())
          set_sources.insert(name.GetString());
      std::string weights;
      for (const auto& weight : change["weights"].GetObject())
        if (!change.HasMember("set_sources") ||
            set_sources.count(weight.name.GetString()) > 0)
          weights += std::string(" ") + weight.name.GetString() + "=" +
                     std::to_string(weight.value.GetDouble());
      std::snprintf(line, sizeof line, "from step %.0f:%s\n",
                    number_or(change, "from_step"), weights.c_str());
      out += line;
    }
  }
  return out;
}

std::vector<std::pair<std::string, double>> parse_weights(
    const std::vector<std::string>& args) {
  std::vector<std::pair<std::string, double>> weights;
  for (const auto& arg : args) {
    auto equals = arg.find('=');
    if (equals == std::string::npos || equals == 0)
      throw error(errc::invalid_config,
                  "expected NAME=WEIGHT, got '" + arg + "'");
    // Decimal numbers only: std::stod also takes hexadecimal, inf and nan.
    const std::string value = arg.substr(equals + 1);
    static const std::regex decimal(
        R"([+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)");
    if (!std::regex_match(value, decimal))
      throw error(errc::invalid_config,
                  "weight in '" + arg + "' is not a decimal number; write a "
                  "finite number >= 0 such as 2 or 0.25");
    // strtod returns a tiny value as 0 or a denormal instead of failing.
    const double weight = std::strtod(value.c_str(), nullptr);
    if (!std::isfinite(weight) || weight < 0)
      throw error(errc::invalid_config,
                  "weight in '" + arg + "' must be a finite number >= 0");
    const std::string name = arg.substr(0, equals);
    for (const auto& [earlier, unused] : weights)
      if (earlier == name)
        throw error(errc::invalid_config,
                    "source '" + name + "' is named twice; give each source "
                    "one weight");
    weights.emplace_back(name, weight);
  }
  if (weights.empty())
    throw error(errc::invalid_config, "set-weights needs NAME=WEIGHT pairs");
  return weights;
}

int run(int argc, char** argv) {
  std::string planner;
  std::chrono::milliseconds timeout{10000};
  overlord::actors::tls_files tls;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--planner" && i + 1 < argc) {
      planner = argv[++i];
    } else if (arg == "--timeout" && i + 1 < argc) {
      timeout = std::chrono::milliseconds(
          static_cast<int64_t>(parse_positive("--timeout", argv[++i]) * 1000));
    } else if (arg == "--tls-cert" && i + 1 < argc) {
      tls.certificate = argv[++i];
    } else if (arg == "--tls-key" && i + 1 < argc) {
      tls.key = argv[++i];
    } else if (arg == "--tls-ca" && i + 1 < argc) {
      tls.ca = argv[++i];
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else {
      rest.push_back(arg);
    }
  }
  if (planner.empty() || rest.empty())
    throw error(errc::invalid_config, "--planner HOST:PORT and a command are required");
  // A missing or unreadable certificate is reported without the usage
  // text, which would hide the file's name.
  if (tls.enabled()) {
    try {
      overlord::actors::check_tls_files(tls);
    } catch (const error& e) {
      std::cerr << "overlordctl: " << e.what() << "\n";
      return 2;
    }
  }

  const std::string command = rest[0];
  std::vector<std::string> args(rest.begin() + 1, rest.end());

  if (command == "status") {
    bool json = !args.empty() && args[0] == "--json";
    if (args.size() > (json ? 1u : 0u))
      throw error(errc::invalid_config, "status takes only --json");
    overlord::tools::admin_client client(planner, timeout, tls);
    auto status = client.status_json();
    std::cout << (json ? status + "\n" : render_status(status));
    return 0;
  }

  if (command == "top") {
    double interval = 1;
    long iterations = -1;
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--interval" && i + 1 < args.size())
        interval = parse_positive("--interval", args[++i]);
      else if (args[i] == "--iterations" && i + 1 < args.size())
        iterations = static_cast<long>(parse_positive("--iterations", args[++i]));
      else
        throw error(errc::invalid_config, "top takes --interval and --iterations");
    }
    overlord::tools::admin_client client(planner, timeout, tls);
    for (long i = 0; iterations < 0 || i < iterations; ++i) {
      auto view = render_status(client.status_json());
      // Clear the screen and move home, then draw the view.
      std::cout << "\x1b[2J\x1b[H" << "overlordctl top   planner " << planner
                << "   (Ctrl-C quits)\n\n"
                << view << std::flush;
      if (iterations < 0 || i + 1 < iterations)
        std::this_thread::sleep_for(
            std::chrono::milliseconds(static_cast<int64_t>(interval * 1000)));
    }
    return 0;
  }

  if (command == "set-weights") {
    auto weights = parse_weights(args);
    overlord::tools::admin_client client(planner, timeout, tls);
    auto step = client.set_weights(weights);
    std::cout << "weights apply from step " << step << "\n";
    return 0;
  }

  if (command == "drain") {
    if (args.size() != 1)
      throw error(errc::invalid_config, "drain takes one node id");
    overlord::tools::admin_client client(planner, timeout, tls);
    std::cout << client.drain(args[0]) << "\n";
    return 0;
  }

  if (command == "log-level") {
    std::string node;
    if (args.size() >= 2 && args[0] == "--node") {
      node = args[1];
      args.erase(args.begin(), args.begin() + 2);
    }
    if (args.size() != 2)
      throw error(errc::invalid_config,
                  "log-level takes [--node ID] LOGGER LEVEL");
    overlord::tools::admin_client client(planner, timeout, tls);
    std::cout << client.set_log_level(node, args[0], args[1]) << "\n";
    return 0;
  }

  throw error(errc::invalid_config, "unknown command '" + command + "'");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const error& e) {
    std::cerr << "overlordctl: " << e.what() << "\n";
    if (e.code() == errc::invalid_config)
      std::cerr << "\n" << usage;
    return e.code() == errc::invalid_config ? 2 : 1;
  }
}
