// Payload transport between two processes on loopback: requests per second
// and MB/s (1 MB = 1e6 bytes) of token fetches served through CAF's
// middleman (BASP over TCP) or through a ZeroMQ ROUTER/DEALER pair. A fetch
// is a small request (sequence number, offset, length) and a reply with that
// many int32 tokens, as a constructor node fetches a piece from a loader
// node. The client checks the size and a checksum of every reply.
//
// usage:
//   payload_transport_bench --serve caf|zmq --port P [--timeout S]
//   payload_transport_bench --serve caf-relay --port P --upstream-port Q
//   payload_transport_bench --fetch caf|caf-raw|caf-relay|zmq --port P
//       --payload-tokens N --requests R --in-flight K [--warmup W]
//       [--timeout S]
//
// A server prints {"serve":MODE,"port":P} once it listens (port 0 picks a
// free port) and runs until SIGINT, SIGTERM or --timeout seconds. A client
// prints one JSON line with mode, payload_tokens, requests, in_flight,
// seconds, requests_per_s and mb_per_s, and exits 1 on any failed check.
//
// Fetch modes:
//   caf        reply is a std::vector<int32_t>, which CAF 0.17 serialises
//              element by element;
//   caf-raw    reply is a std::vector<char> holding the same bytes, which
//              CAF 0.17 serialises with one memcpy;
//   caf-relay  requests the handle of the caf server from a caf-relay
//              server connected to it, then fetches from that handle;
//   zmq        reply is [sequence + status frame][raw int32 bytes frame].

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <zmq.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace overlord::bench {

// Client -> token server: (fetch_atom, sequence, offset, length). The reply
// is a std::vector<int32_t>.
using fetch_atom = caf::atom_constant<caf::atom("fetch")>;
// Client -> token server: the same request. The reply is a std::vector<char>.
using fetch_raw_atom = caf::atom_constant<caf::atom("fetch_raw")>;
// Client -> relay. The reply is the caf::actor handle of the token server.
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
// Fetcher actor -> main thread: the run finished (elapsed seconds) or
// failed (message).
using done_atom = caf::atom_constant<caf::atom("done")>;
using failed_atom = caf::atom_constant<caf::atom("failed")>;

using clock_type = std::chrono::steady_clock;

// Size of every server's token buffer. Clients fetch pieces at offsets spread
// over the whole buffer, so replies differ from each other.
constexpr uint32_t server_tokens = 1u << 20;
constexpr uint32_t max_payload_tokens = 1u << 16;
// GPT-2's vocabulary size, so the values look like real token ids.
constexpr uint32_t vocabulary_size = 50257;

std::atomic<int> stop_signal{0};

void on_signal(int signal_number) {
  stop_signal = signal_number;
}

// ---------------------------------------------------------------------------
// Options

struct options {
  std::string serve_mode;
  std::string fetch_mode;
  uint16_t port = 0;
  uint16_t upstream_port = 0;
  uint32_t payload_tokens = 0;
  uint64_t requests = 0;
  uint32_t in_flight = 1;
  uint64_t warmup = 100;
  // The server's lifetime, or the client's limit for the whole run (and for
  // each CAF request).
  double timeout_seconds = 0;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "payload_transport_bench: " << message << "\n"
            << "usage: payload_transport_bench --serve caf|caf-relay|zmq "
               "--port P [--upstream-port Q] [--timeout SECONDS]\n"
            << "       payload_transport_bench --fetch "
               "caf|caf-raw|caf-relay|zmq --port P --payload-tokens N "
               "--requests R --in-flight K [--warmup W] [--timeout SECONDS]\n";
  std::exit(2);
}

uint64_t parse_count(const std::string& flag, const std::string& text,
                     uint64_t min, uint64_t max) {
  try {
    size_t used = 0;
    auto value = std::stoull(text, &used);
    if (used == text.size() && value >= min && value <= max)
      return value;
  } catch (const std::exception&) {
  }
  usage_error(flag + " must be an integer from " + std::to_string(min) +
              " to " + std::to_string(max) + ", got '" + text + "'");
}

double parse_seconds(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    auto value = std::stod(text, &used);
    if (used == text.size() && value > 0 && value <= 3600)
      return value;
  } catch (const std::exception&) {
  }
  usage_error(flag + " must be a number of seconds in (0, 3600], got '" +
              text + "'");
}

options parse_options(int argc, char** argv) {
  options out;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc)
      usage_error("missing value after " + flag);
    std::string value = argv[++i];
    if (flag == "--serve")
      out.serve_mode = value;
    else if (flag == "--fetch")
      out.fetch_mode = value;
    else if (flag == "--port")
      out.port = static_cast<uint16_t>(parse_count(flag, value, 0, 65535));
    else if (flag == "--upstream-port")
      out.upstream_port =
          static_cast<uint16_t>(parse_count(flag, value, 1, 65535));
    else if (flag == "--payload-tokens")
      out.payload_tokens = static_cast<uint32_t>(
          parse_count(flag, value, 1, max_payload_tokens));
    else if (flag == "--requests")
      out.requests = parse_count(flag, value, 1, 100000000);
    else if (flag == "--in-flight")
      out.in_flight = static_cast<uint32_t>(parse_count(flag, value, 1, 1024));
    else if (flag == "--warmup")
      out.warmup = parse_count(flag, value, 0, 1000000);
    else if (flag == "--timeout")
      out.timeout_seconds = parse_seconds(flag, value);
    else
      usage_error("unknown option " + flag);
  }

  bool serving = !out.serve_mode.empty();
  bool fetching = !out.fetch_mode.empty();
  if (serving == fetching)
    usage_error("give exactly one of --serve and --fetch");
  if (serving) {
    if (out.serve_mode != "caf" && out.serve_mode != "caf-relay" &&
        out.serve_mode != "zmq")
      usage_error("--serve must be caf, caf-relay or zmq, got '" +
                  out.serve_mode + "'");
    if (out.serve_mode == "caf-relay" && out.upstream_port == 0)
      usage_error("--serve caf-relay needs --upstream-port (the caf server)");
    if (out.timeout_seconds == 0)
      out.timeout_seconds = 600;
    return out;
  }
  if (out.fetch_mode != "caf" && out.fetch_mode != "caf-raw" &&
      out.fetch_mode != "caf-relay" && out.fetch_mode != "zmq")
    usage_error("--fetch must be caf, caf-raw, caf-relay or zmq, got '" +
                out.fetch_mode + "'");
  if (out.port == 0)
    usage_error("--fetch needs --port (the server's port)");
  if (out.payload_tokens == 0 || out.requests == 0)
    usage_error("missing --payload-tokens or --requests (both are required "
                "with --fetch)");
  if (out.timeout_seconds == 0)
    out.timeout_seconds = 60;
  return out;
}

// ---------------------------------------------------------------------------
// Tokens, requests and checks, shared by both transports

std::vector<int32_t> make_token_buffer() {
  std::vector<int32_t> tokens(server_tokens);
  for (uint32_t i = 0; i < server_tokens; ++i)
    tokens[i] = static_cast<int32_t>((i * 2654435761u) % vocabulary_size);
  return tokens;
}

// Offset of request `sequence`: a stride that is prime to the range, so
// consecutive requests read different parts of the buffer.
uint32_t offset_for(uint64_t sequence, uint32_t payload_tokens) {
  uint64_t range = server_tokens - payload_tokens + 1;
  return static_cast<uint32_t>((sequence * 104729u) % range);
}

// Position-weighted sum of `count` int32 values stored at `bytes` in host
// order, so a changed, missing or reordered token changes the result.
uint64_t token_checksum(const unsigned char* bytes, size_t count) {
  uint32_t plain = 0;
  uint32_t weighted = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t value;
    std::memcpy(&value, bytes + i * sizeof(value), sizeof(value));
    plain += value;
    weighted += value * static_cast<uint32_t>(i + 1);
  }
  return (static_cast<uint64_t>(weighted) << 32) | plain;
}

// Expected reply checksum of every request of a run, computed before the
// clock starts so the timed part does one pass over each reply.
struct fetch_plan {
  std::string mode;
  uint32_t payload_tokens = 0;
  uint64_t warmup = 0;
  uint64_t requests = 0;  // timed requests, after the warm-up
  uint32_t in_flight = 1;
  double timeout_seconds = 60;
  std::vector<uint64_t> expected_checksums;  // warmup + requests entries

  uint64_t total() const { return warmup + requests; }
};

fetch_plan make_plan(const options& opts) {
  fetch_plan plan;
  plan.mode = opts.fetch_mode;
  plan.payload_tokens = opts.payload_tokens;
  plan.warmup = opts.warmup;
  plan.requests = opts.requests;
  plan.in_flight = opts.in_flight;
  plan.timeout_seconds = opts.timeout_seconds;

  auto tokens = make_token_buffer();
  plan.expected_checksums.resize(plan.total());
  for (uint64_t sequence = 0; sequence < plan.total(); ++sequence) {
    auto offset = offset_for(sequence, plan.payload_tokens);
    plan.expected_checksums[sequence] = token_checksum(
        reinterpret_cast<const unsigned char*>(tokens.data() + offset),
        plan.payload_tokens);
  }
  return plan;
}

// Returns an empty string when the reply to `sequence` has the expected
// size and checksum, otherwise what is wrong with it.
std::string check_reply(const fetch_plan& plan, uint64_t sequence,
                        const unsigned char* bytes, size_t size) {
  size_t expected_size = size_t{plan.payload_tokens} * sizeof(int32_t);
  if (sequence >= plan.total())
    return "reply names unknown request " + std::to_string(sequence);
  if (size != expected_size)
    return "reply to request " + std::to_string(sequence) + " has " +
           std::to_string(size) + " bytes, expected " +
           std::to_string(expected_size);
  if (token_checksum(bytes, plan.payload_tokens) !=
      plan.expected_checksums[sequence])
    return "reply to request " + std::to_string(sequence) +
           " has the wrong content (checksum mismatch)";
  return {};
}

void print_result(const fetch_plan& plan, double seconds) {
  double bytes = double(plan.requests) * plan.payload_tokens * sizeof(int32_t);
  std::printf(
      "{\"mode\":\"%s\",\"payload_tokens\":%u,\"requests\":%llu,"
      "\"in_flight\":%u,\"seconds\":%.4f,\"requests_per_s\":%.1f,"
      "\"mb_per_s\":%.2f}\n",
      plan.mode.c_str(), plan.payload_tokens,
      static_cast<unsigned long long>(plan.requests), plan.in_flight, seconds,
      plan.requests / seconds, bytes / 1e6 / seconds);
  std::fflush(stdout);
}

void print_listening(const std::string& mode, uint16_t port) {
  std::printf("{\"serve\":\"%s\",\"port\":%u}\n", mode.c_str(), port);
  std::fflush(stdout);
}

// Sleeps until a stop signal arrives or `timeout_seconds` pass.
void wait_for_stop(const std::string& mode, double timeout_seconds) {
  auto deadline = clock_type::now() +
                  std::chrono::duration_cast<clock_type::duration>(
                      std::chrono::duration<double>(timeout_seconds));
  while (stop_signal == 0 && clock_type::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (stop_signal == 0)
    std::cerr << "payload_transport_bench: " << mode << " server stops after "
              << timeout_seconds << " s (--timeout)\n";
}

// Logs a rejected request on stderr: the first 10, then every 1000th, with
// the running count.
void log_rejected_request(uint64_t& rejected, const std::string& reason) {
  ++rejected;
  if (rejected <= 10 || rejected % 1000 == 0)
    std::cerr << "payload_transport_bench: rejected request (" << rejected
              << " so far): " << reason << "\n";
}

// ---------------------------------------------------------------------------
// CAF

// CAF 0.17 serialises only types with a registered portable name, and
// std::vector<int32_t> is not one of its built-in types (std::vector<char>
// is). Both processes must register it under the same name. If either side
// does not, the requester gets sec::unexpected_response (checked with CAF
// 0.17.6), and only a sender without the name prints an error.
void configure_caf(caf::actor_system_config& config) {
  config.load<caf::io::middleman>();
  config.add_message_type<std::vector<int32_t>>("token_list");
}

caf::behavior caf_token_server(
    caf::event_based_actor* self,
    std::shared_ptr<const std::vector<int32_t>> tokens) {
  auto rejected = std::make_shared<uint64_t>(0);
  auto slice_error = [self, rejected](uint32_t offset, uint32_t length) {
    auto reason = "offset " + std::to_string(offset) + " + length " +
                  std::to_string(length) + " exceeds the " +
                  std::to_string(server_tokens) + " tokens of " +
                  caf::to_string(self->address());
    log_rejected_request(*rejected, reason);
    return caf::make_error(caf::sec::invalid_argument, reason);
  };
  auto in_range = [](uint32_t offset, uint32_t length) {
    return uint64_t{offset} + length <= server_tokens;
  };
  return {
      [=](fetch_atom, uint64_t, uint32_t offset,
          uint32_t length) -> caf::result<std::vector<int32_t>> {
        if (!in_range(offset, length))
          return slice_error(offset, length);
        auto first = tokens->begin() + offset;
        return std::vector<int32_t>(first, first + length);
      },
      [=](fetch_raw_atom, uint64_t, uint32_t offset,
          uint32_t length) -> caf::result<std::vector<char>> {
        if (!in_range(offset, length))
          return slice_error(offset, length);
        std::vector<char> bytes(size_t{length} * sizeof(int32_t));
        std::memcpy(bytes.data(), tokens->data() + offset, bytes.size());
        return bytes;
      },
  };
}

caf::behavior caf_relay(caf::event_based_actor*, caf::actor upstream) {
  return {
      [=](lookup_atom) { return upstream; },
  };
}

int run_caf_server(const options& opts) {
  caf::actor_system_config config;
  configure_caf(config);
  caf::actor_system system{config};

  caf::actor published;
  if (opts.serve_mode == "caf-relay") {
    auto upstream =
        system.middleman().remote_actor("127.0.0.1", opts.upstream_port);
    if (!upstream) {
      std::cerr << "payload_transport_bench: cannot connect to the caf server "
                   "at 127.0.0.1:"
                << opts.upstream_port << ": " << system.render(upstream.error())
                << " (start it first with --serve caf)\n";
      return 1;
    }
    published = system.spawn(caf_relay, *upstream);
  } else {
    auto tokens =
        std::make_shared<const std::vector<int32_t>>(make_token_buffer());
    published = system.spawn(caf_token_server, tokens);
  }

  auto port = system.middleman().publish(published, opts.port, "127.0.0.1");
  if (!port) {
    std::cerr << "payload_transport_bench: cannot publish on 127.0.0.1:"
              << opts.port << ": " << system.render(port.error()) << "\n";
    caf::anon_send_exit(published, caf::exit_reason::user_shutdown);
    return 1;
  }
  print_listening(opts.serve_mode, *port);

  wait_for_stop(opts.serve_mode, opts.timeout_seconds);
  caf::anon_send_exit(published, caf::exit_reason::user_shutdown);
  return 0;
}

// Keeps `in_flight` requests open against the token server until every
// request of the plan has a checked reply, then sends (done_atom, seconds)
// or (failed_atom, message) to `report_to` and quits.
struct caf_fetcher_state {
  uint64_t next_sequence = 0;
  uint64_t received = 0;
  bool failed = false;
  clock_type::time_point start;
  static constexpr const char* name = "payload_fetcher";
};

using caf_fetcher_actor = caf::stateful_actor<caf_fetcher_state>;

void caf_fail(caf_fetcher_actor* self, caf::actor report_to,
              const std::string& message) {
  if (self->state.failed)
    return;
  self->state.failed = true;
  self->send(report_to, failed_atom::value, message);
  self->quit();
}

void caf_on_reply(caf_fetcher_actor* self, const fetch_plan* plan,
                  caf::actor report_to, uint64_t sequence,
                  const unsigned char* bytes, size_t size);

void caf_send_next(caf_fetcher_actor* self, const fetch_plan* plan,
                   caf::actor server, caf::actor report_to) {
  auto& st = self->state;
  if (st.failed || st.next_sequence >= plan->total())
    return;
  uint64_t sequence = st.next_sequence++;
  uint32_t offset = offset_for(sequence, plan->payload_tokens);
  auto timeout = std::chrono::duration_cast<caf::timespan>(
      std::chrono::duration<double>(plan->timeout_seconds));
  auto on_error = [=](caf::error& err) {
    caf_fail(self, report_to,
             "request " + std::to_string(sequence) +
                 " failed: " + self->system().render(err));
  };

  if (plan->mode == "caf-raw") {
    self->request(server, timeout, fetch_raw_atom::value, sequence, offset,
                  plan->payload_tokens)
        .then(
            [=](const std::vector<char>& bytes) {
              caf_on_reply(self, plan, report_to, sequence,
                           reinterpret_cast<const unsigned char*>(bytes.data()),
                           bytes.size());
              caf_send_next(self, plan, server, report_to);
            },
            on_error);
    return;
  }
  self->request(server, timeout, fetch_atom::value, sequence, offset,
                plan->payload_tokens)
      .then(
          [=](const std::vector<int32_t>& tokens) {
            caf_on_reply(self, plan, report_to, sequence,
                         reinterpret_cast<const unsigned char*>(tokens.data()),
                         tokens.size() * sizeof(int32_t));
            caf_send_next(self, plan, server, report_to);
          },
          on_error);
}

void caf_on_reply(caf_fetcher_actor* self, const fetch_plan* plan,
                  caf::actor report_to, uint64_t sequence,
                  const unsigned char* bytes, size_t size) {
  auto& st = self->state;
  if (st.failed)
    return;
  auto problem = check_reply(*plan, sequence, bytes, size);
  if (!problem.empty()) {
    caf_fail(self, report_to, problem);
    return;
  }
  ++st.received;
  if (st.received == plan->warmup)
    st.start = clock_type::now();
  if (st.received == plan->total()) {
    std::chrono::duration<double> elapsed = clock_type::now() - st.start;
    self->send(report_to, done_atom::value, elapsed.count());
    self->quit();
  }
}

caf::behavior caf_fetcher(caf_fetcher_actor* self, const fetch_plan* plan,
                          caf::actor server, caf::actor report_to) {
  self->state.start = clock_type::now();
  for (uint32_t i = 0; i < plan->in_flight; ++i)
    caf_send_next(self, plan, server, report_to);
  // Every message this actor handles is a response to its own requests.
  return {};
}

// Connects to the server of `opts.port`, or through the relay there to the
// server behind it, and returns the handle to fetch from.
caf::expected<caf::actor> connect_caf_server(caf::actor_system& system,
                                             const options& opts) {
  auto remote = system.middleman().remote_actor("127.0.0.1", opts.port);
  if (!remote || opts.fetch_mode != "caf-relay")
    return remote;

  caf::scoped_actor self{system};
  caf::expected<caf::actor> upstream{caf::sec::request_timeout};
  self->request(*remote, std::chrono::seconds(10), lookup_atom::value)
      .receive([&](const caf::actor& handle) { upstream = handle; },
               [&](caf::error& err) { upstream = std::move(err); });
  return upstream;
}

int run_caf_client(const options& opts) {
  auto plan = make_plan(opts);

  caf::actor_system_config config;
  configure_caf(config);
  caf::actor_system system{config};

  auto server = connect_caf_server(system, opts);
  if (!server) {
    std::cerr << "payload_transport_bench: cannot reach the " << opts.fetch_mode
              << " server at 127.0.0.1:" << opts.port << ": "
              << system.render(server.error())
              << " (is a matching --serve process listening there?)\n";
    return 1;
  }

  caf::scoped_actor self{system};
  auto fetcher = system.spawn(caf_fetcher, &plan, *server,
                              caf::actor_cast<caf::actor>(self));
  int exit_code = 1;
  auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(plan.timeout_seconds));
  self->receive(
      [&](done_atom, double seconds) {
        print_result(plan, seconds);
        exit_code = 0;
      },
      [&](failed_atom, const std::string& message) {
        std::cerr << "payload_transport_bench: " << message << "\n";
      },
      caf::after(limit) >> [&] {
        std::cerr << "payload_transport_bench: " << opts.fetch_mode
                  << " run timed out after " << plan.timeout_seconds
                  << " s (--timeout)\n";
        caf::anon_send_exit(fetcher, caf::exit_reason::user_shutdown);
      });
  return exit_code;
}

// ---------------------------------------------------------------------------
// ZeroMQ

// Request frame: sequence, offset and length in host byte order (both ends
// run on the same machine).
struct zmq_request {
  uint64_t sequence;
  uint32_t offset;
  uint32_t length;
};
static_assert(sizeof(zmq_request) == 16, "zmq_request must have no padding");

// First reply frame: the request's sequence number and a status. The second
// frame contains the tokens when the status is zmq_status_ok, else it is
// empty.
struct zmq_reply_header {
  uint64_t sequence;
  uint32_t status;
  uint32_t reserved;
};
static_assert(sizeof(zmq_reply_header) == 16,
              "zmq_reply_header must have no padding");

constexpr uint32_t zmq_status_ok = 0;
constexpr uint32_t zmq_status_invalid_request = 1;

// Replies to every request waiting on `router` and returns how many it
// replied to. Counts rejected requests in `rejected`.
uint64_t zmq_reply_to_pending(zmq::socket_t& router,
                              const std::vector<int32_t>& tokens,
                              uint64_t& rejected) {
  uint64_t replied = 0;
  while (true) {
    zmq::message_t identity;
    if (!router.recv(identity, zmq::recv_flags::dontwait))
      return replied;

    // A DEALER request is one frame after the identity. Read every frame of
    // the message (ZeroMQ delivers them together), so that a malformed
    // message cannot shift the next one.
    std::vector<zmq::message_t> frames;
    bool more = identity.more();
    while (more) {
      frames.emplace_back();
      (void)router.recv(frames.back());
      more = frames.back().more();
    }

    zmq_request request{};
    zmq_reply_header header{};
    bool valid = frames.size() == 1 && frames[0].size() == sizeof(request);
    if (!valid) {
      std::string got = std::to_string(frames.size()) + " frame(s)";
      if (!frames.empty())
        got += ", the first of " + std::to_string(frames[0].size()) + " bytes";
      log_rejected_request(rejected,
                           "expected one " + std::to_string(sizeof(request)) +
                               "-byte frame after the identity, got " + got);
    } else {
      std::memcpy(&request, frames[0].data(), sizeof(request));
      header.sequence = request.sequence;
      valid = uint64_t{request.offset} + request.length <= server_tokens;
      if (!valid)
        log_rejected_request(
            rejected, "request " + std::to_string(request.sequence) +
                          ": offset " + std::to_string(request.offset) +
                          " + length " + std::to_string(request.length) +
                          " exceeds the " + std::to_string(server_tokens) +
                          " tokens");
    }
    header.status = valid ? zmq_status_ok : zmq_status_invalid_request;

    zmq::message_t payload(valid ? size_t{request.length} * sizeof(int32_t)
                                 : 0);
    if (valid)
      std::memcpy(payload.data(), tokens.data() + request.offset,
                  payload.size());
    router.send(identity, zmq::send_flags::sndmore);
    router.send(zmq::buffer(&header, sizeof(header)), zmq::send_flags::sndmore);
    router.send(payload, zmq::send_flags::none);
    ++replied;
  }
}

int run_zmq_server(const options& opts) {
  auto tokens = make_token_buffer();
  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  std::string endpoint =
      "tcp://127.0.0.1:" +
      (opts.port == 0 ? std::string("*") : std::to_string(opts.port));
  try {
    router.bind(endpoint);
  } catch (const zmq::error_t& e) {
    std::cerr << "payload_transport_bench: cannot bind " << endpoint << ": "
              << e.what() << "\n";
    return 1;
  }
  auto bound = router.get(zmq::sockopt::last_endpoint);
  auto port = static_cast<uint16_t>(
      std::stoul(bound.substr(bound.rfind(':') + 1)));
  print_listening("zmq", port);

  auto deadline = clock_type::now() +
                  std::chrono::duration_cast<clock_type::duration>(
                      std::chrono::duration<double>(opts.timeout_seconds));
  uint64_t replied = 0;
  uint64_t rejected = 0;
  zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
  while (stop_signal == 0 && clock_type::now() < deadline) {
    try {
      zmq::poll(items, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      // SIGINT or SIGTERM interrupts the poll, and the loop condition then
      // stops the server.
      if (e.num() == EINTR)
        continue;
      throw;
    }
    if (items[0].revents & ZMQ_POLLIN)
      replied += zmq_reply_to_pending(router, tokens, rejected);
  }
  if (stop_signal == 0)
    std::cerr << "payload_transport_bench: zmq server stops after "
              << opts.timeout_seconds << " s (--timeout)\n";
  std::cerr << "payload_transport_bench: zmq server replied to " << replied
            << " requests, " << rejected << " of them rejected\n";
  return 0;
}

// Receives one reply and checks it. Returns an empty string on success,
// otherwise what went wrong.
std::string zmq_receive_reply(zmq::socket_t& dealer, const fetch_plan& plan,
                              std::vector<bool>& seen) {
  zmq::message_t header_frame;
  zmq::message_t payload;
  if (!dealer.recv(header_frame, zmq::recv_flags::dontwait))
    return "no reply frame although the socket was readable";
  if (!header_frame.more() || header_frame.size() != sizeof(zmq_reply_header))
    return "malformed reply header (" + std::to_string(header_frame.size()) +
           " bytes)";
  if (!dealer.recv(payload) || payload.more())
    return "malformed reply: expected exactly one payload frame";

  zmq_reply_header header;
  std::memcpy(&header, header_frame.data(), sizeof(header));
  if (header.status != zmq_status_ok)
    return "server rejected request " + std::to_string(header.sequence) +
           " as invalid";
  auto problem =
      check_reply(plan, header.sequence,
                  static_cast<const unsigned char*>(payload.data()),
                  payload.size());
  if (!problem.empty())
    return problem;
  if (seen[header.sequence])
    return "second reply to request " + std::to_string(header.sequence);
  seen[header.sequence] = true;
  return {};
}

int run_zmq_client(const options& opts) {
  auto plan = make_plan(opts);
  zmq::context_t context(1);
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect("tcp://127.0.0.1:" + std::to_string(opts.port));

  auto deadline = clock_type::now() +
                  std::chrono::duration_cast<clock_type::duration>(
                      std::chrono::duration<double>(plan.timeout_seconds));
  std::vector<bool> seen(plan.total(), false);
  uint64_t sent = 0;
  uint64_t received = 0;
  auto start = clock_type::now();
  zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}};

  while (received < plan.total()) {
    while (sent < plan.total() && sent - received < plan.in_flight) {
      zmq_request request{sent, offset_for(sent, plan.payload_tokens),
                          plan.payload_tokens};
      dealer.send(zmq::buffer(&request, sizeof(request)),
                  zmq::send_flags::none);
      ++sent;
    }

    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - clock_type::now());
    if (remaining.count() > 0)
      zmq::poll(items, 1, remaining);
    if (remaining.count() <= 0 || !(items[0].revents & ZMQ_POLLIN)) {
      std::cerr << "payload_transport_bench: zmq run timed out after "
                << plan.timeout_seconds << " s (--timeout) with " << received
                << " of " << plan.total() << " replies\n";
      return 1;
    }
    auto problem = zmq_receive_reply(dealer, plan, seen);
    if (!problem.empty()) {
      std::cerr << "payload_transport_bench: " << problem << "\n";
      return 1;
    }
    ++received;
    if (received == plan.warmup)
      start = clock_type::now();
  }

  std::chrono::duration<double> elapsed = clock_type::now() - start;
  print_result(plan, elapsed.count());
  return 0;
}

}  // namespace overlord::bench

int main(int argc, char** argv) {
  using namespace overlord::bench;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  auto opts = parse_options(argc, argv);
  try {
    if (opts.serve_mode == "zmq")
      return run_zmq_server(opts);
    if (!opts.serve_mode.empty())
      return run_caf_server(opts);
    if (opts.fetch_mode == "zmq")
      return run_zmq_client(opts);
    return run_caf_client(opts);
  } catch (const std::exception& e) {
    std::cerr << "payload_transport_bench: " << e.what() << "\n";
    return 1;
  }
}
