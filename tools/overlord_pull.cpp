// overlord_pull: a minimal trainer client. It pulls N batches of one rank
// and prints one JSON line per batch, for scripts, tests and operators.

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/client.hpp"
#include "common/error.hpp"
#include "tools/admin_client.hpp"
#include "transport/curve.hpp"
#include "transport/wire.hpp"

namespace {

constexpr const char* usage =
    "usage: overlord_pull (--endpoint ADDR | --planner HOST:PORT) --rank R\n"
    "                     --steps N [--timeout SECONDS] [--cp-rank C]\n"
    "                     [--prefetch K] [--first-step S] [--step-ms MS]\n"
    "                     [--failover-timeout SECONDS] [--progress]\n"
    "                     [--curve-secret FILE --curve-server-public FILE]\n"
    "                     [--tls-cert FILE --tls-key FILE --tls-ca FILE]\n"
    "\n"
    "  --endpoint ADDR    constructor address, tcp://HOST:PORT or HOST:PORT\n"
    "  --planner ADDR     ask the planner (HOST:PORT) for the rank's endpoint\n"
    "  --cp-rank C        context-parallel slice to pull (0)\n"
    "  --rank R           the rank to pull (port = base_port + R)\n"
    "  --steps N          batches to pull\n"
    "  --timeout SECONDS  give up when no batch arrives for this long (30)\n"
    "  --prefetch K       requests kept in flight (2)\n"
    "  --first-step S     first step to request (0)\n"
    "  --failover-timeout SECONDS\n"
    "                     with --planner: move to the rank's shadow when the\n"
    "                     endpoint sends nothing for this long (3)\n"
    "  --step-ms MS       wait this long after each batch, like a training\n"
    "                     step (0)\n"
    "  --progress         print a progress line to stderr\n"
    "  --curve-secret FILE this client's CURVE secret key (Z85); with\n"
    "                     --curve-server-public, the link uses CURVE\n"
    "  --curve-server-public FILE\n"
    "                     the constructors' CURVE public key (Z85)\n"
    "  --tls-cert FILE, --tls-key FILE, --tls-ca FILE\n"
    "                     with --planner: PEM certificate, key and CA for a\n"
    "                     planner that uses TLS\n"
    "\n"
    "Prints one JSON object per batch: step, rank, rows, tokens, documents,\n"
    "sources, source_tokens, padding, imbalance, images (count),\n"
    "image_patches (their positions), digest, content_digest\n"
    "(the digest without sample keys).\n";

struct options {
  overlord::client::client_options client;
  std::string planner;
  overlord::actors::tls_files tls;
  uint64_t steps = 0;
  uint64_t step_ms = 0;
  bool progress = false;
};

uint64_t parse_number(const std::string& flag, const std::string& text) {
  if (text.empty() || text[0] == '-' || text[0] == '+')
    throw overlord::error(overlord::errc::invalid_config,
                          flag + " expects a non-negative integer, got '" +
                              text + "'");
  try {
    size_t used = 0;
    auto value = std::stoull(text, &used);
    if (used == text.size())
      return value;
  } catch (const std::exception&) {
  }
  throw overlord::error(overlord::errc::invalid_config,
                        flag + " expects a non-negative integer, got '" + text +
                            "'");
}

double parse_seconds(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    double value = std::stod(text, &used);
    if (used == text.size() && value > 0)
      return value;
  } catch (const std::exception&) {
  }
  throw overlord::error(overlord::errc::invalid_config,
                        flag + " expects a positive number of seconds, got '" +
                            text + "'");
}

options parse_arguments(int argc, char** argv) {
  options out;
  bool have_endpoint = false, have_rank = false, have_steps = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        throw overlord::error(overlord::errc::invalid_config,
                              flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--endpoint") {
      out.client.endpoint = value();
      if (out.client.endpoint.find("://") == std::string::npos)
        out.client.endpoint = "tcp://" + out.client.endpoint;
      have_endpoint = true;
    } else if (flag == "--planner") {
      out.planner = value();
      have_endpoint = true;
    } else if (flag == "--cp-rank") {
      out.client.cp_rank = static_cast<uint32_t>(parse_number(flag, value()));
    } else if (flag == "--rank") {
      out.client.rank = static_cast<uint32_t>(parse_number(flag, value()));
      have_rank = true;
    } else if (flag == "--steps") {
      out.steps = parse_number(flag, value());
      have_steps = true;
    } else if (flag == "--timeout") {
      out.client.timeout = std::chrono::milliseconds(
          static_cast<int64_t>(parse_seconds(flag, value()) * 1000));
    } else if (flag == "--prefetch") {
      out.client.prefetch = static_cast<uint32_t>(parse_number(flag, value()));
    } else if (flag == "--first-step") {
      out.client.first_step = parse_number(flag, value());
    } else if (flag == "--failover-timeout") {
      out.client.failover_timeout = std::chrono::milliseconds(
          static_cast<int64_t>(parse_seconds(flag, value()) * 1000));
    } else if (flag == "--step-ms") {
      out.step_ms = parse_number(flag, value());
    } else if (flag == "--progress") {
      out.progress = true;
    } else if (flag == "--curve-secret") {
      auto keys = overlord::transport::read_secret_key(value(), flag);
      out.client.curve_secret_key = keys.secret_key;
      out.client.curve_public_key = keys.public_key;
    } else if (flag == "--curve-server-public") {
      out.client.curve_server_key =
          overlord::transport::read_public_key(value(), flag);
    } else if (flag == "--tls-cert") {
      out.tls.certificate = value();
    } else if (flag == "--tls-key") {
      out.tls.key = value();
    } else if (flag == "--tls-ca") {
      out.tls.ca = value();
    } else if (flag == "--help" || flag == "-h") {
      std::cout << usage;
      std::exit(0);
    } else {
      throw overlord::error(overlord::errc::invalid_config,
                            "unknown flag '" + flag + "'");
    }
  }
  if (!have_endpoint || !have_rank || !have_steps)
    throw overlord::error(overlord::errc::invalid_config,
                          "--endpoint (or --planner), --rank and --steps are "
                          "required");
  if (out.client.curve_secret_key.empty() !=
      out.client.curve_server_key.empty())
    throw overlord::error(overlord::errc::invalid_config,
                          "CURVE needs both --curve-secret and "
                          "--curve-server-public");
  if (!out.planner.empty() && !out.client.endpoint.empty())
    throw overlord::error(overlord::errc::invalid_config,
                          "give --endpoint or --planner, not both");
  return out;
}

std::string summarize(const overlord::wire::Batch& batch) {
  std::vector<std::string> names;
  if (batch.source_names())
    for (auto* name : *batch.source_names())
      names.push_back(name->str());
  std::vector<uint64_t> documents(names.size(), 0);
  std::vector<uint64_t> tokens(names.size(), 0);
  uint64_t started = 0;
  if (batch.documents()) {
    for (auto* slice : *batch.documents()) {
      if (slice->source() >= names.size())
        continue;
      tokens[slice->source()] += slice->length();
      if (slice->document_offset() == 0) {
        documents[slice->source()]++;
        started++;
      }
    }
  }
  const auto* counters = batch.counters();

  rapidjson::StringBuffer text;
  rapidjson::Writer<rapidjson::StringBuffer> json(text);
  json.StartObject();
  json.Key("step");
  json.Uint64(batch.step());
  json.Key("rank");
  json.Uint(batch.rank());
  json.Key("rows");
  json.Uint(batch.rows());
  json.Key("sequence_length");
  json.Uint(batch.sequence_length());
  json.Key("tokens");
  json.Uint64(counters ? counters->tokens() : 0);
  json.Key("documents");
  json.Uint64(started);
  json.Key("sources");
  json.StartObject();
  for (size_t i = 0; i < names.size(); ++i) {
    json.Key(names[i].c_str());
    json.Uint64(documents[i]);
  }
  json.EndObject();
  json.Key("source_tokens");
  json.StartObject();
  for (size_t i = 0; i < names.size(); ++i) {
    json.Key(names[i].c_str());
    json.Uint64(tokens[i]);
  }
  json.EndObject();
  json.Key("padding");
  json.Uint64(counters ? counters->padding() : 0);
  json.Key("imbalance");
  json.Double(counters ? counters->imbalance() : 1.0);
  uint64_t image_patches = 0;
  if (batch.images())
    for (auto* image : *batch.images())
      image_patches += image->patches();
  json.Key("images");
  json.Uint64(batch.images() ? batch.images()->size() : 0);
  json.Key("image_patches");
  json.Uint64(image_patches);
  json.Key("digest");
  json.String(overlord::transport::batch_digest(batch).c_str());
  json.Key("content_digest");
  json.String(overlord::transport::batch_content_digest(batch).c_str());
  json.EndObject();
  return text.GetString();
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  try {
    opts = parse_arguments(argc, argv);
  } catch (const overlord::error& e) {
    std::cerr << "overlord_pull: " << e.what() << "\n\n" << usage;
    return 2;
  }
  // A missing or unreadable certificate is a usage error too (exit 2),
  // reported without the usage text, which would hide the file's name.
  if (opts.tls.enabled()) {
    try {
      overlord::actors::check_tls_files(opts.tls);
    } catch (const overlord::error& e) {
      std::cerr << "overlord_pull: " << e.what() << "\n";
      return 2;
    }
  }

  try {
    if (!opts.planner.empty()) {
      auto route = overlord::tools::find_rank(opts.planner, opts.client.rank,
                                              opts.client.timeout, opts.tls);
      opts.client.endpoint = route.endpoint;
      opts.client.node = route.node;
      opts.client.fallback_endpoints = route.endpoints;
      // Before a failover, ask the planner where the rank is served now:
      // it may have promoted the shadow already. After a failed lookup the
      // client tries the endpoints from the first one.
      opts.client.resolve = [planner = opts.planner, rank = opts.client.rank,
                             tls = opts.tls] {
        return overlord::tools::admin_client(
                   planner, std::chrono::milliseconds(2000), tls)
            .endpoints(rank);
      };
    }
    overlord::client::batch_client client(opts.client);
    auto started = std::chrono::steady_clock::now();
    auto last_progress = started;
    uint64_t tokens = 0;
    for (uint64_t i = 0; i < opts.steps; ++i) {
      auto received = client.next();
      const auto& batch = received.batch();
      if (batch.counters())
        tokens += batch.counters()->tokens();
      std::cout << summarize(batch) << std::endl;
      if (opts.step_ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(opts.step_ms));

      auto now = std::chrono::steady_clock::now();
      if (opts.progress &&
          (now - last_progress > std::chrono::milliseconds(250) ||
           i + 1 == opts.steps)) {
        client.collect_ready();
        double seconds = std::chrono::duration<double>(now - started).count();
        std::fprintf(stderr,
                     "\rrank %u  step %llu/%llu  %.0f tokens/s  batches "
                     "waiting %zu  ",
                     opts.client.rank, static_cast<unsigned long long>(i + 1),
                     static_cast<unsigned long long>(opts.steps),
                     seconds > 0 ? tokens / seconds : 0.0, client.buffered());
        last_progress = now;
      }
    }
    if (opts.progress)
      std::fprintf(stderr, "\n");
    if (client.failovers() > 0)
      std::fprintf(stderr,
                   "overlord_pull: rank %u failed over %u time(s); now at %s%s\n",
                   opts.client.rank, client.failovers(),
                   client.endpoint().c_str(),
                   client.node().empty()
                       ? ""
                       : (" (node " + client.node() + ")").c_str());
    std::cout.flush();
    return 0;
  } catch (const overlord::error& e) {
    std::cout.flush();
    std::cerr << "overlord_pull: " << e.what() << "\n";
    return 1;
  }
}
