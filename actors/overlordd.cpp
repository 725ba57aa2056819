// overlordd: the Overlord daemon. One process runs one role:
//   planner      owns the plane; nodes join it on planner_port
//   loader       runs the source pools the planner assigns
//   constructor  runs the constructors (trainer endpoints) it assigns
//   all          all of them in this process (the default)

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <csignal>
#include <iostream>
#include <string>
#include <chrono>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/messages.hpp"
#include "actors/node_agent.hpp"
#include "actors/planner_actor.hpp"
#include "common/error.hpp"
#include "common/job_metrics.hpp"
#include "common/log.hpp"
#include "common/metrics_server.hpp"
#include "planner/config.hpp"
#include "sources/tokenizer.hpp"

namespace {

std::atomic<int> stop_signal{0};

void on_signal(int signal) { stop_signal = signal; }

constexpr const char* usage =
    "usage: overlordd [--role all|planner|loader|constructor] [options]\n"
    "\n"
    "  --role ROLE         what this process runs (default all)\n"
    "  --config FILE       job configuration (YAML); planner and all only\n"
    "  --set KEY=VALUE     override a config value; sources by name, e.g.\n"
    "                      --set sources.mail.workers=4\n"
    "  --planner HOST:PORT the planner to join; loader and constructor only\n"
    "  --join-timeout-ms MS keep trying to reach the planner this long at\n"
    "                      start, for nodes started before it (default 30000)\n"
    "  --bind ADDR         address this node listens on (default 127.0.0.1)\n"
    "  --port PORT         port of this node's middleman (default: any free)\n"
    "  --payload-port PORT port a loader node serves payloads on over\n"
    "                      ZeroMQ (default: any free)\n"
    "  --node-id ID        name in logs and status (default ROLE-HOST-PID)\n"
    "  --resume DIR        resume the job from the checkpoint in DIR;\n"
    "                      planner and all only\n"
    "  --recover           with --resume: the planner restarts under running\n"
    "                      nodes, which keep serving; it resumes where their\n"
    "                      trainers are\n"
    "  --from-step S       with --resume: the first step trainers need (the\n"
    "                      next_step of their saved state); default: the\n"
    "                      newest snapshot\n"
    "  --log-level LEVEL   trace, debug, info, warn or error\n"
    "  --insecure          allow binding a non-loopback address without TLS\n"
    "  --log-format FORMAT text (default) or json: one JSON object per line\n"
    "  --metrics-port PORT serve Prometheus metrics at /metrics and a health\n"
    "                      check at /healthz over HTTP on this port, on the\n"
    "                      node's bind address (default: metrics_port of\n"
    "                      the config for planner and all, else 0: off)\n"
    "\n"
    "CAF's wire protocol between nodes has no authentication: keep planner\n"
    "and node ports on a private network.\n";

struct options {
  std::string role = "all";
  std::string config_path;
  std::vector<overlord::planner::config_override> overrides;
  std::string planner;
  int join_timeout_ms = 30000;
  std::string bind = "127.0.0.1";
  int port = 0;
  int payload_port = 0;
  std::string node_id;
  std::string log_level;
  std::string log_format = "text";
  std::optional<int> metrics_port;  // overrides metrics_port of the config
  std::string resume_dir;
  std::optional<uint64_t> from_step;
  bool recover = false;
  bool insecure = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  throw overlord::error(overlord::errc::invalid_config, message);
}

options parse_arguments(int argc, char** argv) {
  options out;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        usage_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--role")
      out.role = value();
    else if (flag == "--config")
      out.config_path = value();
    else if (flag == "--set")
      out.overrides.push_back(overlord::planner::parse_override(value()));
    else if (flag == "--planner")
      out.planner = value();
    else if (flag == "--bind")
      out.bind = value();
    else if (flag == "--port") {
      auto text = value();
      try {
        out.port = std::stoi(text);
      } catch (const std::exception&) {
        usage_error("--port expects a number, got '" + text + "'");
      }
      if (out.port < 0 || out.port > 65535)
        usage_error("--port " + text + " is out of range 0..65535");
    } else if (flag == "--payload-port") {
      auto text = value();
      try {
        out.payload_port = std::stoi(text);
      } catch (const std::exception&) {
        usage_error("--payload-port expects a number, got '" + text + "'");
      }
      if (out.payload_port < 0 || out.payload_port > 65535)
        usage_error("--payload-port " + text + " is out of range 0..65535");
    } else if (flag == "--join-timeout-ms") {
      auto text = value();
      try {
        out.join_timeout_ms = std::stoi(text);
      } catch (const std::exception&) {
        usage_error("--join-timeout-ms expects a number, got '" + text + "'");
      }
      if (out.join_timeout_ms < 0)
        usage_error("--join-timeout-ms must be >= 0");
    } else if (flag == "--insecure") {
      out.insecure = true;
    } else if (flag == "--metrics-port") {
      auto text = value();
      try {
        out.metrics_port = std::stoi(text);
      } catch (const std::exception&) {
        usage_error("--metrics-port expects a number, got '" + text + "'");
      }
      if (*out.metrics_port < 0 || *out.metrics_port > 65535)
        usage_error("--metrics-port " + text + " is out of range 0..65535");
    } else if (flag == "--log-format") {
      out.log_format = value();
      if (out.log_format != "text" && out.log_format != "json")
        usage_error("--log-format expects text or json, got '" +
                    out.log_format + "'");
    } else if (flag == "--recover") {
      out.recover = true;
    } else if (flag == "--resume") {
      out.resume_dir = value();
    } else if (flag == "--from-step") {
      auto text = value();
      try {
        size_t used = 0;
        out.from_step = std::stoull(text, &used);
        if (used != text.size())
          throw std::invalid_argument(text);
      } catch (const std::exception&) {
        usage_error("--from-step expects a step number, got '" + text + "'");
      }
    } else if (flag == "--node-id")
      out.node_id = value();
    else if (flag == "--log-level")
      out.log_level = value();
    else if (flag == "--help" || flag == "-h") {
      std::cout << usage;
      std::exit(0);
    } else
      usage_error("unknown flag '" + flag + "'");
  }

  const bool runs_planner = out.role == "all" || out.role == "planner";
  if (!runs_planner && out.role != "loader" && out.role != "constructor")
    usage_error("unknown role '" + out.role +
                "'; use all, planner, loader or constructor");
  if (runs_planner && out.config_path.empty())
    usage_error("--config is missing; --role " + out.role + " needs one");
  if (!runs_planner && out.planner.empty())
    usage_error("--planner HOST:PORT is missing; --role " + out.role +
                " joins a planner");
  if (out.from_step && out.resume_dir.empty())
    usage_error("--from-step needs --resume DIR");
  if (out.recover && (out.resume_dir.empty() || out.from_step))
    usage_error("--recover needs --resume DIR and takes no --from-step");
  if (!runs_planner && !out.resume_dir.empty())
    usage_error("--resume is for --role planner or all");
  if (!runs_planner && (!out.config_path.empty() || !out.overrides.empty()))
    usage_error("--role " + out.role +
                " takes its configuration from the planner; drop --config "
                "and --set");
  return out;
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0)
    return "host";
  return name;
}

std::pair<std::string, uint16_t> split_host_port(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    usage_error("--planner expects HOST:PORT, got '" + text + "'");
  int port = 0;
  try {
    port = std::stoi(text.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port <= 0 || port > 65535)
    usage_error("--planner " + text + ": invalid port");
  return {text.substr(0, colon), static_cast<uint16_t>(port)};
}

bool is_loopback(const std::string& address) {
  return address.rfind("127.", 0) == 0 || address == "localhost" ||
         address == "::1";
}

// Warns once when this process listens beyond loopback under --insecure,
// since neither CAF's wire protocol nor ZeroMQ authenticates peers here.
// NOTE: a non-loopback bind without --insecure is accepted too, until
// TLS options exist to take its place.
void warn_if_exposed(const options& opts, const std::string& bind,
                     const std::shared_ptr<spdlog::logger>& log) {
  if (!opts.insecure || is_loopback(bind))
    return;
  log->warn("role={} listening on {} without TLS or authentication "
            "(--insecure): anyone who reaches this address can join the job "
            "and read its batches; keep it on a private network",
            opts.role, bind);
}

// The node's id: --node-id, or ROLE-HOST-PID.
std::string node_id_of(const options& opts) {
  if (!opts.node_id.empty())
    return opts.node_id;
  return opts.role + "-" + host_name() + "-" + std::to_string(getpid());
}

// Waits for a fatal error, a drain, a signal or the end of a watched
// actor (the node agent or the planner). Returns the exit code.
int supervise(caf::scoped_actor& supervisor,
              const std::shared_ptr<spdlog::logger>& log,
              const std::string& node_id) {
  int exit_code = 0;
  bool running = true;
  while (running) {
    supervisor->receive(
        [&](caf::down_msg& down) {
          log->error("node={} stopping: an actor of this node ended ({})",
                     node_id, supervisor->system().render(down.reason));
          exit_code = 1;
          running = false;
        },
        [&](overlord::actors::fatal_atom, const std::string& message) {
          log->error("node={} stopping: {}", node_id, message);
          exit_code = 1;
          running = false;
        },
        [&](overlord::actors::leave_atom) { running = false; },
        caf::after(std::chrono::milliseconds(200)) >> [&] {
          if (stop_signal != 0) {
            log->info("node={} received signal {}; shutting down", node_id,
                      stop_signal.load());
            running = false;
          }
        });
  }
  return exit_code;
}

int run(const options& opts) {
  using namespace overlord;
  set_log_format(opts.log_format);
  auto log = get_logger("actors");
  const std::string node_id = node_id_of(opts);

  caf::actor_system_config system_config;
  actors::add_message_types(system_config);
  system_config.load<caf::io::middleman>();

  std::optional<planner::job_config> config;
  int32_t pad_id = 0;
  std::shared_ptr<checkpoint::checkpoint_store> store;
  std::optional<checkpoint::restore_plan> restore;
  if (opts.role == "all" || opts.role == "planner") {
    config = planner::load_config(opts.config_path, opts.overrides);
    if (opts.role == "planner" && config->planner_port == 0)
      throw error(errc::invalid_config,
                  "--role planner needs planner_port in the config (or --set "
                  "planner_port=PORT) so that nodes can join");
    if (opts.role == "all" && config->planner_port == 0 &&
        (config->loader_nodes > 1 || config->constructor_nodes > 1))
      throw error(errc::invalid_config,
                  "loader_nodes or constructor_nodes above 1 need other "
                  "nodes to join, but planner_port is 0; set planner_port or "
                  "use 1");
    set_log_level(opts.log_level.empty() ? config->log_level : opts.log_level);
    pad_id = sources::gpt2_tokenizer::load(config->tokenizer)->eos_id();
    if (!opts.resume_dir.empty())
      config->checkpoint_dir = opts.resume_dir;
    if (!config->checkpoint_dir.empty())
      store = std::make_shared<checkpoint::checkpoint_store>(
          config->checkpoint_dir);
    if (!opts.resume_dir.empty() && !opts.recover) {
      uint64_t step = opts.from_step ? *opts.from_step : UINT64_MAX;
      if (!opts.from_step) {
        // Without a step: resume at the newest snapshot.
        auto newest = store->load_snapshot(step);
        step = newest ? newest->step : 0;
      }
      restore = checkpoint::prepare_restore(*store, *config, step);
      store->rewrite_deltas(restore->kept_records);
      if (restore->dropped_weight_changes > 0)
        log->warn("resume at step={} drops {} weight change(s) that the "
                  "previous run logged for later steps; set them again if "
                  "they are still wanted",
                  step, restore->dropped_weight_changes);
    }
  } else if (!opts.log_level.empty()) {
    set_log_level(opts.log_level);
  }

  warn_if_exposed(opts, config ? config->bind : opts.bind, log);
  // The planner's process listens on the config's bind address, other
  // nodes on --bind.
  const std::string bind_address = config ? config->bind : opts.bind;
  int metrics_port = config ? config->metrics_port : 0;
  if (opts.metrics_port)
    metrics_port = *opts.metrics_port;
  metrics::metrics_server metrics_http;
  if (metrics_port > 0) {
    metrics_http.start(bind_address, metrics_port);
    metrics::record_node(node_id, opts.role);
    metrics::set_health(false, "starting");
    log->info("node={} serves metrics at http://{}:{}/metrics", node_id,
              bind_address, metrics_port);
  }

  caf::actor_system system{system_config};
  caf::scoped_actor supervisor{system};
  auto supervisor_handle = caf::actor_cast<caf::actor>(supervisor);
  auto zmq_context = std::make_shared<zmq::context_t>(1);
  std::vector<caf::actor> everyone;
  std::string address = "local";

  caf::actor planner_handle;
  if (config) {
    planner_handle = actors::spawn_planner(
        system, actors::planner_setup{*config, pad_id, supervisor_handle,
                                      store, restore, opts.recover});
    everyone.push_back(planner_handle);
    if (config->planner_port > 0) {
      auto published = system.middleman().publish(
          planner_handle, static_cast<uint16_t>(config->planner_port),
          config->bind.c_str(), true);
      if (!published) {
        log->error("cannot listen on {}:{}: {}; choose another planner_port",
                   config->bind, config->planner_port,
                   system.render(published.error()));
        caf::anon_send_exit(planner_handle, caf::exit_reason::user_shutdown);
        return 1;
      }
      address = config->bind + ":" + std::to_string(*published);
      log->info("planner listening on {} (CAF middleman, no authentication)",
                address);
      if (opts.role == "planner")
        metrics::set_health(true, "planner listening on " + address);
    }
  } else {
    auto [host, port] = split_host_port(opts.planner);
    // Nodes are often started together with, or before, the planner:
    // retry with a growing pause until the join timeout.
    auto give_up = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(opts.join_timeout_ms);
    auto pause = std::chrono::milliseconds(200);
    auto remote = system.middleman().remote_actor(host, port);
    for (int attempt = 1; !remote && stop_signal == 0 &&
                          std::chrono::steady_clock::now() + pause < give_up;
         ++attempt) {
      if (attempt == 1 || attempt % 10 == 0)
        log->warn("planner at {} not reachable yet ({}); retrying for up to "
                  "{} ms",
                  opts.planner, system.render(remote.error()),
                  opts.join_timeout_ms);
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(2000));
      remote = system.middleman().remote_actor(host, port);
    }
    if (!remote) {
      log->error("cannot reach the planner at {}: {}; check --planner and "
                 "that the planner runs",
                 opts.planner, system.render(remote.error()));
      return 1;
    }
    planner_handle = *remote;
  }

  if (opts.role != "planner") {
    actors::agent_setup setup;
    setup.info.role = opts.role;
    setup.info.pid = static_cast<uint32_t>(getpid());
    setup.info.cores = std::thread::hardware_concurrency();
    setup.info.address = address;
    setup.info.bind = opts.role == "all" ? config->bind : opts.bind;
    setup.info.id = node_id;
    setup.planner = planner_handle;
    setup.planner_address = opts.planner;
    setup.supervisor = supervisor_handle;
    setup.zmq_context = zmq_context;
    if (opts.role == "loader")
      setup.payload_endpoint = "tcp://" + opts.bind + ":" +
                               std::to_string(opts.payload_port);
    auto agent = actors::spawn_node_agent(system, setup);
    everyone.push_back(agent);
    if (opts.role != "all") {
      // Constructor nodes connect to loader nodes at this address, so
      // payloads travel between them directly, never through the planner.
      auto published = system.middleman().publish(
          agent, static_cast<uint16_t>(opts.port), opts.bind.c_str(), true);
      if (!published) {
        log->error("node={} cannot listen on {}:{}: {}; choose another --port",
                   node_id, opts.bind, opts.port,
                   system.render(published.error()));
        for (auto& actor : everyone)
          caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
        return 1;
      }
      address = opts.bind + ":" + std::to_string(*published);
    }
    caf::anon_send(agent, actors::join_atom::value, address);
    supervisor->monitor(agent);
  }
  if (config)
    supervisor->monitor(planner_handle);
  log->info("node={} started: role={} pid={} address={}", node_id, opts.role,
            getpid(), address);

  int exit_code = supervise(supervisor, log, node_id);
  metrics::set_health(false, "stopping");
  for (auto& actor : everyone)
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  everyone.clear();
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
    overlord::get_logger("actors")->info("node stopped: node={}",
                                         node_id_of(opts));
    return code;
  } catch (const overlord::error& e) {
    std::cerr << "overlordd: " << e.what() << "\n";
    return e.code() == overlord::errc::invalid_config ? 2 : 1;
  }
}
