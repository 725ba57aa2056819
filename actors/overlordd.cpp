// overlordd: the Overlord daemon. One process runs one role:
//   planner      owns the plane; nodes join it on planner_port
//   loader       runs the source pools the planner assigns
//   constructor  runs the constructors (trainer endpoints) it assigns
//   all          all of them in this process (the default)

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/messages.hpp"
#include "actors/node_agent.hpp"
#include "actors/planner_actor.hpp"
#include "actors/tls.hpp"
#include "common/error.hpp"
#include "common/job_metrics.hpp"
#include "common/log.hpp"
#include "common/metrics_server.hpp"
#include "planner/config.hpp"
#include "sources/tokenizer.hpp"
#include "transport/curve.hpp"

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
    "  --log-format FORMAT text (default) or json: one JSON object per line\n"
    "  --metrics-port PORT serve Prometheus metrics at /metrics and a health\n"
    "                      check at /healthz over HTTP on this port, on the\n"
    "                      node's bind address (default: metrics_port of\n"
    "                      the config for planner and all, else 0: off)\n"
    "  --tls-cert FILE     PEM certificate of this process; with --tls-key\n"
    "                      and --tls-ca, CAF links run over mutual TLS\n"
    "  --tls-key FILE      PEM private key of --tls-cert\n"
    "  --tls-ca FILE       PEM certificate of the CA that peers' certificates\n"
    "                      must be signed by\n"
    "  --curve-secret FILE this node's ZeroMQ CURVE secret key (Z85); with\n"
    "                      --curve-authorized, trainer and payload sockets\n"
    "                      use CURVE\n"
    "  --curve-authorized FILE\n"
    "                      public keys (Z85, one per line) of the trainers\n"
    "                      and nodes that may connect\n"
    "  --curve-server-public FILE\n"
    "                      public key of the loader nodes' payload servers\n"
    "                      (default: this node's own, for a shared node key)\n"
    "  --insecure          allow a non-loopback --bind (or bind) without TLS\n"
    "                      certificates and CURVE keys\n"
    "\n"
    "Without --tls-* flags CAF links have no authentication, and overlordd\n"
    "refuses to listen on a non-loopback address unless --insecure is given.\n";

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
  overlord::actors::tls_files tls;
  std::string curve_secret;
  std::string curve_authorized;
  std::string curve_server_public;
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
    } else if (flag == "--tls-cert") {
      out.tls.certificate = value();
    } else if (flag == "--tls-key") {
      out.tls.key = value();
    } else if (flag == "--tls-ca") {
      out.tls.ca = value();
    } else if (flag == "--curve-secret") {
      out.curve_secret = value();
    } else if (flag == "--curve-authorized") {
      out.curve_authorized = value();
    } else if (flag == "--curve-server-public") {
      out.curve_server_public = value();
    } else if (flag == "--insecure") {
      out.insecure = true;
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
  const bool curve = !out.curve_secret.empty() ||
                     !out.curve_authorized.empty() ||
                     !out.curve_server_public.empty();
  if (curve && out.role == "planner")
    usage_error("--role planner has no ZeroMQ socket; give the --curve-* "
                "flags to loader, constructor and all nodes");
  if (curve && (out.curve_secret.empty() || out.curve_authorized.empty()))
    usage_error("CURVE needs --curve-secret and --curve-authorized; give "
                "both (scripts/gen-certs DIR makes them) or no --curve-* "
                "flag");
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

// The node's id: --node-id, or ROLE-HOST-PID.
std::string node_id_of(const options& opts) {
  if (!opts.node_id.empty())
    return opts.node_id;
  return opts.role + "-" + host_name() + "-" + std::to_string(getpid());
}

// Loads this node's CURVE keys; returns null without --curve-secret.
std::shared_ptr<const overlord::transport::curve_keys> load_curve_keys(
    const options& opts) {
  using namespace overlord::transport;
  if (opts.curve_secret.empty())
    return nullptr;
  auto keys = read_secret_key(opts.curve_secret, "--curve-secret");
  keys.authorized =
      read_authorized_keys(opts.curve_authorized, "--curve-authorized");
  keys.server_public_key =
      opts.curve_server_public.empty()
          ? keys.public_key
          : read_public_key(opts.curve_server_public, "--curve-server-public");
  return std::make_shared<const curve_keys>(std::move(keys));
}

// Starts the ZAP handler that checks every client of this node's CURVE
// sockets, logging rejected clients (the first 20, then every 100th).
std::unique_ptr<overlord::transport::zap_handler> start_zap_handler(
    zmq::context_t& context, const overlord::transport::curve_keys& keys,
    const std::string& node_id) {
  auto log = overlord::get_logger("actors");
  auto rejected = std::make_shared<std::atomic<uint64_t>>(0);
  return std::make_unique<overlord::transport::zap_handler>(
      context, keys.authorized,
      [log, rejected, node_id](const std::string& address,
                               const std::string& key) {
        uint64_t count = ++*rejected;
        if (count <= 20 || count % 100 == 0)
          log->warn("node={} rejected a ZeroMQ client at {} whose CURVE key "
                    "{} is not in --curve-authorized ({} rejected so far)",
                    node_id, address, key, count);
      });
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
  // Idle scheduler threads skip CAF's 500 polls with 50 us sleeps, whose
  // wake-ups slow the source workers. They wait and wake every 1 ms to steal.
  system_config.set("work-stealing.moderate-poll-attempts", size_t{0});
  system_config.set("work-stealing.relaxed-sleep-duration",
                    caf::timespan{std::chrono::milliseconds(1)});
  actors::add_message_types(system_config);
  system_config.load<caf::io::middleman>();
  if (opts.tls.enabled())
    actors::enable_tls(system_config, opts.tls);

  std::optional<planner::job_config> config;
  int32_t pad_id = 0;
  // The job's tokenizer, loaded once: the planner reads the pad id from it,
  // and with `--role all` the node agent's pools share it.
  std::shared_ptr<const sources::gpt2_tokenizer> tokenizer;
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
    if (config->planner_port > 0)
      actors::require_secure_bind(config->bind, "the planner's CAF port without TLS",
                                  opts.tls.enabled(), opts.insecure,
                                  "--tls-cert, --tls-key and --tls-ca");
    tokenizer = sources::gpt2_tokenizer::load(config->tokenizer);
    pad_id = tokenizer->eos_id();
    if (opts.role == "planner")
      tokenizer.reset();
    if (!opts.resume_dir.empty()) {
      // The store would create a missing directory and then report that
      // it contains no snapshot, which hides a mistyped path.
      std::error_code status;
      if (!std::filesystem::is_directory(opts.resume_dir, status)) {
        const bool missing =
            !status || status == std::errc::no_such_file_or_directory;
        throw error(errc::invalid_config,
                    "--resume " + opts.resume_dir +
                        (missing ? std::string(": no such checkpoint directory")
                                 : ": cannot read the checkpoint directory (" +
                                       status.message() + ")") +
                        "; give the checkpoint_dir of the run to resume");
      }
      config->checkpoint_dir = opts.resume_dir;
    }
    if (!config->checkpoint_dir.empty())
      store = std::make_shared<checkpoint::checkpoint_store>(
          config->checkpoint_dir);
    if (store && opts.resume_dir.empty()) {
      std::optional<checkpoint::loaded_snapshot> earlier;
      try {
        earlier = store->load_snapshot(UINT64_MAX);
      } catch (const overlord::error& e) {
        log->warn("checkpoint_dir {} holds a damaged snapshot of an earlier "
                  "run: {}",
                  config->checkpoint_dir, e.what());
      }
      if (earlier)
        log->warn("checkpoint_dir {} already holds a checkpoint (newest "
                  "snapshot at step {}); this run starts at step 0 and "
                  "writes into it, next to that run's snapshots and log, so "
                  "a later --resume without --from-step may pick up that "
                  "run. Use --resume {} to continue that run, or an empty "
                  "directory to keep the runs apart",
                  config->checkpoint_dir, earlier->step,
                  config->checkpoint_dir);
    }
    if (!opts.resume_dir.empty() && !opts.recover) {
      uint64_t step = opts.from_step ? *opts.from_step : UINT64_MAX;
      if (!opts.from_step) {
        // Without a step: resume at the newest snapshot.
        auto newest = store->load_snapshot(step);
        step = newest ? newest->step : 0;
      }
      restore = checkpoint::prepare_restore(*store, *config, step);
      // Steps past the log are planned again without records to check
      // them against, so a mistyped step shows only here.
      const uint64_t logged_to =
          restore->step_deltas.empty() ? restore->snapshot.step
                                       : restore->step_deltas.rbegin()->first + 1;
      if (step > logged_to)
        log->warn("resume at step={} is past the end of the checkpoint's "
                  "log (step {}); steps {} to {} are planned again without "
                  "a record to check them against. Check that {} is the "
                  "step the trainers need next",
                  step, logged_to, logged_to, step - 1, step);
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
  if (opts.role == "loader" || opts.role == "constructor")
    actors::require_secure_bind(opts.bind, "this node's CAF port without TLS",
                                opts.tls.enabled(), opts.insecure,
                                "--tls-cert, --tls-key and --tls-ca");
  auto curve = load_curve_keys(opts);
  if (opts.role != "planner")
    actors::require_secure_bind(
        opts.role == "all" ? config->bind : opts.bind,
        "the ZeroMQ batch and payload sockets without CURVE", curve != nullptr,
        opts.insecure, "--curve-secret and --curve-authorized");

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
  // Declared after the context, so it closes its socket before the
  // context is destroyed.
  std::unique_ptr<transport::zap_handler> zap;
  if (curve)
    zap = start_zap_handler(*zmq_context, *curve, node_id);
  std::vector<caf::actor> everyone;
  std::string address = "local";

  caf::actor planner_handle;
  if (config) {
    planner_handle = actors::spawn_planner(
        system, actors::planner_setup{*config, pad_id, supervisor_handle,
                                      store, restore, opts.recover});
    everyone.push_back(planner_handle);
    if (config->planner_port > 0) {
      auto published = actors::publish_actor(
          system, planner_handle, static_cast<uint16_t>(config->planner_port),
          config->bind);
      if (!published) {
        log->error("cannot listen on {}:{}: {}; choose another planner_port",
                   config->bind, config->planner_port,
                   system.render(published.error()));
        caf::anon_send_exit(planner_handle, caf::exit_reason::user_shutdown);
        return 1;
      }
      address = config->bind + ":" + std::to_string(*published);
      log->info("planner listening on {} ({})", address,
                opts.tls.enabled() ? "CAF over mutual TLS"
                                   : "CAF middleman, no authentication");
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
    auto remote = actors::connect_actor(system, host, port);
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
      remote = actors::connect_actor(system, host, port);
    }
    if (!remote && stop_signal != 0) {
      log->info("node={} received signal {} while waiting for the planner; "
                "shutting down",
                node_id, stop_signal.load());
      return 0;
    }
    if (!remote) {
      log->error("cannot reach the planner at {}: {}; check --planner, that "
                 "the planner runs, and that both use TLS certificates from "
                 "the same CA (or both none)",
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
    setup.info.curve = curve != nullptr;
    setup.info.address = address;
    setup.info.bind = opts.role == "all" ? config->bind : opts.bind;
    setup.info.id = node_id;
    setup.planner = planner_handle;
    setup.planner_address = opts.planner;
    setup.supervisor = supervisor_handle;
    setup.zmq_context = zmq_context;
    setup.curve = curve;
    if (tokenizer) {
      setup.tokenizer = tokenizer;
      setup.tokenizer_directory = config->tokenizer;
    }
    if (opts.role == "loader")
      setup.payload_endpoint = "tcp://" + opts.bind + ":" +
                               std::to_string(opts.payload_port);
    auto agent = actors::spawn_node_agent(system, setup);
    everyone.push_back(agent);
    if (opts.role != "all") {
      // Constructor nodes connect to loader nodes at this address, so
      // payloads travel between them directly, never through the planner.
      auto published = actors::publish_actor(
          system, agent, static_cast<uint16_t>(opts.port), opts.bind);
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
  // A node that stops on request reports it to the planner first, so the
  // planner moves its work without taking the closed link for a failure.
  if (exit_code == 0 && (opts.role == "loader" || opts.role == "constructor") &&
      !everyone.empty())
    supervisor
        ->request(everyone.back(), std::chrono::seconds(2),
                  actors::bye_atom::value)
        .receive([](bool) {}, [](caf::error&) {});
  // The node agent first, so that it does not see the planner stop.
  for (auto actor = everyone.rbegin(); actor != everyone.rend(); ++actor)
    caf::anon_send_exit(*actor, caf::exit_reason::user_shutdown);
  everyone.clear();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  // glibc gives each thread that allocates its own arena, and memory freed
  // there is kept for reuse. Worker threads that tokenize in bursts leave
  // most of a node's resident memory in such arenas, so cap them unless
  // MALLOC_ARENA_MAX sets the number.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr)
    mallopt(M_ARENA_MAX, 2);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  options opts;
  try {
    opts = parse_arguments(argc, argv);
  } catch (const overlord::error& e) {
    std::cerr << "overlordd: " << e.what() << "\n\n" << usage;
    return 2;
  }
  // A file that cannot be read is no mistake of syntax, so the usage text
  // would only push the message out of sight.
  try {
    if (opts.tls.enabled())
      overlord::actors::check_tls_files(opts.tls);
  } catch (const overlord::error& e) {
    std::cerr << "overlordd: " << e.what() << "\n";
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
