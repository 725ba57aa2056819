// overlordd: the Overlord daemon. `--role all` runs the planner, one
// source pool per source and one constructor per rank in this process.

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/constructor.hpp"
#include "actors/messages.hpp"
#include "actors/planner_actor.hpp"
#include "actors/source_pool.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "planner/config.hpp"
#include "sources/tokenizer.hpp"

namespace {

std::atomic<int> stop_signal{0};

void on_signal(int signal) { stop_signal = signal; }

constexpr const char* usage =
    "usage: overlordd --role all --config FILE [--set KEY=VALUE]... "
    "[--log-level LEVEL]\n"
    "\n"
    "  --role all         run planner, source pools and constructors here\n"
    "  --config FILE      job configuration (YAML)\n"
    "  --set KEY=VALUE    override a config value; sources by name, e.g.\n"
    "                     --set sources.mail.workers=4\n"
    "  --log-level LEVEL  trace, debug, info, warn or error (default: the\n"
    "                     config's log_level)\n";

struct options {
  std::string role;
  std::string config_path;
  std::vector<overlord::planner::config_override> overrides;
  std::string log_level;
};

options parse_arguments(int argc, char** argv) {
  options out;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        throw overlord::error(overlord::errc::invalid_config,
                              flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--role")
      out.role = value();
    else if (flag == "--config")
      out.config_path = value();
    else if (flag == "--set")
      out.overrides.push_back(overlord::planner::parse_override(value()));
    else if (flag == "--log-level")
      out.log_level = value();
    else if (flag == "--help" || flag == "-h") {
      std::cout << usage;
      std::exit(0);
    } else
      throw overlord::error(overlord::errc::invalid_config,
                            "unknown flag '" + flag + "'");
  }
  if (out.role.empty())
    out.role = "all";
  if (out.role != "all")
    throw overlord::error(
        overlord::errc::invalid_config,
        "--role " + out.role +
            " is not available in this build; use --role all, which runs "
            "every role in this process");
  if (out.config_path.empty())
    throw overlord::error(overlord::errc::invalid_config, "--config is missing");
  return out;
}

int run(const options& opts) {
  using namespace overlord;
  auto config = planner::load_config(opts.config_path, opts.overrides);
  set_log_level(opts.log_level.empty() ? config.log_level : opts.log_level);
  auto log = get_logger("actors");

  auto tokenizer = sources::gpt2_tokenizer::load(config.tokenizer);

  caf::actor_system_config system_config;
  actors::add_message_types(system_config);
  caf::actor_system system{system_config};
  caf::scoped_actor supervisor{system};
  auto supervisor_handle = caf::actor_cast<caf::actor>(supervisor);
  auto zmq_context = std::make_shared<zmq::context_t>(1);

  std::vector<caf::actor> everyone;
  std::vector<caf::actor> pools;
  for (uint32_t i = 0; i < config.sources.size(); ++i) {
    actors::pool_setup setup{config, i, tokenizer, supervisor_handle};
    pools.push_back(actors::spawn_source_pool(system, std::move(setup)));
  }
  everyone.insert(everyone.end(), pools.begin(), pools.end());

  auto planner = actors::spawn_planner(
      system, actors::planner_setup{config, pools, supervisor_handle});
  everyone.push_back(planner);

  int exit_code = 0;
  try {
    for (int rank = 0; rank < config.ranks; ++rank) {
      actors::constructor_setup setup;
      setup.config = config;
      setup.rank = static_cast<uint32_t>(rank);
      setup.pools = pools;
      setup.planner = planner;
      setup.supervisor = supervisor_handle;
      setup.pad_id = tokenizer->eos_id();
      setup.zmq_context = zmq_context;
      everyone.push_back(actors::spawn_constructor(system, std::move(setup)));
    }
    log->info("node started: role=all pid={} ranks={} sources={}", getpid(),
              config.ranks, config.sources.size());

    bool running = true;
    while (running) {
      supervisor->receive(
          [&](actors::fatal_atom, const std::string& message) {
            log->error("stopping: {}", message);
            exit_code = 1;
            running = false;
          },
          caf::after(std::chrono::milliseconds(200)) >> [&] {
            if (stop_signal != 0) {
              log->info("received signal {}; shutting down", stop_signal.load());
              running = false;
            }
          });
    }
  } catch (const error& e) {
    log->error("{}", e.what());
    exit_code = 1;
  }

  for (auto& actor : everyone)
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  everyone.clear();
  pools.clear();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  options opts;
  try {
    opts = parse_arguments(argc, argv);
  } catch (const overlord::error& e) {
    std::cerr << "overlordd: " << e.what() << "\n\n" << usage;
    return 2;
  }
  try {
    int code = run(opts);
    overlord::get_logger("actors")->info("node stopped");
    return code;
  } catch (const overlord::error& e) {
    std::cerr << "overlordd: " << e.what() << "\n";
    return 2;
  }
}
