// Load benchmark client. N simulated trainers, one thread and one
// client::batch_client each, pull batches from a constructor node's rank
// endpoints on loopback for a fixed time. Meanwhile a sampler thread
// reads the constructor process's resident set size (VmRSS) once a second.
// Prints a summary and, last, one JSON line. bench/load.sh starts the
// cluster and runs this; see bench/README.md for what is measured.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/client.hpp"
#include "common/error.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct options {
  std::string host = "127.0.0.1";
  int base_port = 0;
  int ranks = 64;
  int clients = 64;
  int seconds = 60;
  int warmup_seconds = 20;
  int pid = 0;
  uint32_t prefetch = 2;
};

const char* const usage =
    "usage: load_bench --base-port PORT --pid PID [--host ADDR] [--ranks N]\n"
    "                  [--clients N] [--seconds S] [--warmup-seconds W]\n"
    "                  [--prefetch K]\n"
    "Client c pulls rank c % ranks from HOST:PORT+rank for S seconds in\n"
    "all; batches and latencies of the first W seconds are not counted.\n"
    "PID is the constructor process whose VmRSS is sampled every second.\n";

options parse_arguments(int argc, char** argv) {
  options out;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc)
      throw overlord::error(overlord::errc::invalid_config,
                            "flag " + flag + " needs a value");
    const std::string value = argv[++i];
    try {
      if (flag == "--host")
        out.host = value;
      else if (flag == "--base-port")
        out.base_port = std::stoi(value);
      else if (flag == "--pid")
        out.pid = std::stoi(value);
      else if (flag == "--ranks")
        out.ranks = std::stoi(value);
      else if (flag == "--clients")
        out.clients = std::stoi(value);
      else if (flag == "--seconds")
        out.seconds = std::stoi(value);
      else if (flag == "--warmup-seconds")
        out.warmup_seconds = std::stoi(value);
      else if (flag == "--prefetch")
        out.prefetch = static_cast<uint32_t>(std::stoul(value));
      else
        throw overlord::error(overlord::errc::invalid_config,
                              "unknown flag " + flag);
    } catch (const std::logic_error&) {
      throw overlord::error(overlord::errc::invalid_config,
                            "flag " + flag + " needs a number, got '" +
                                value + "'");
    }
  }
  if (out.base_port <= 0 || out.pid <= 0 || out.ranks < 1 ||
      out.clients < 1 || out.prefetch < 1 ||
      out.warmup_seconds >= out.seconds || out.warmup_seconds < 0)
    throw overlord::error(
        overlord::errc::invalid_config,
        "need --base-port, --pid, ranks, clients and prefetch >= 1, and "
        "0 <= --warmup-seconds < --seconds");
  return out;
}

// Returns the VmRSS of `pid` in KiB, or 0 when the process is gone.
uint64_t read_rss_kib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stoull(line.substr(6));
  return 0;
}

struct client_result {
  std::vector<double> latencies_ms;  // after warm-up only
  uint64_t batches = 0;              // after warm-up only
  uint64_t last_step = 0;
  std::string error;
};

void run_client(const options& opts, int index, clock_type::time_point start,
                client_result& result) {
  const int rank = index % opts.ranks;
  overlord::client::client_options client;
  client.endpoint =
      "tcp://" + opts.host + ":" + std::to_string(opts.base_port + rank);
  client.rank = static_cast<uint32_t>(rank);
  client.prefetch = opts.prefetch;
  client.timeout = std::chrono::seconds(60);
  const auto warm = start + std::chrono::seconds(opts.warmup_seconds);
  const auto deadline = start + std::chrono::seconds(opts.seconds);
  try {
    overlord::client::batch_client puller(client);
    while (clock_type::now() < deadline) {
      const auto asked = clock_type::now();
      auto batch = puller.next();
      const auto received = clock_type::now();
      result.last_step = batch.batch().step();
      if (asked >= warm && received <= deadline) {
        result.latencies_ms.push_back(
            std::chrono::duration<double, std::milli>(received - asked)
                .count());
        ++result.batches;
      }
    }
  } catch (const overlord::error& e) {
    result.error = e.what();
  }
}

double percentile(std::vector<double>& values, double fraction) {
  if (values.empty())
    return 0;
  const auto index = static_cast<size_t>(fraction * (values.size() - 1) + 0.5);
  std::nth_element(values.begin(), values.begin() + index, values.end());
  return values[index];
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  try {
    opts = parse_arguments(argc, argv);
  } catch (const overlord::error& e) {
    std::fprintf(stderr, "load_bench: %s\n%s", e.what(), usage);
    return 2;
  }

  const auto start = clock_type::now();
  std::atomic<bool> done{false};
  std::vector<std::pair<double, uint64_t>> rss_samples;  // (seconds, KiB)
  std::thread sampler([&] {
    while (!done.load()) {
      const double at =
          std::chrono::duration<double>(clock_type::now() - start).count();
      rss_samples.emplace_back(at, read_rss_kib(opts.pid));
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });

  std::vector<client_result> results(static_cast<size_t>(opts.clients));
  std::vector<std::thread> threads;
  for (int i = 0; i < opts.clients; ++i)
    threads.emplace_back(run_client, std::cref(opts), i, start,
                         std::ref(results[static_cast<size_t>(i)]));
  for (auto& thread : threads)
    thread.join();
  done = true;
  sampler.join();

  std::vector<double> latencies;
  uint64_t batches = 0;
  uint64_t min_step = UINT64_MAX;
  uint64_t max_step = 0;
  int errors = 0;
  for (const auto& result : results) {
    latencies.insert(latencies.end(), result.latencies_ms.begin(),
                     result.latencies_ms.end());
    batches += result.batches;
    min_step = std::min(min_step, result.last_step);
    max_step = std::max(max_step, result.last_step);
    if (!result.error.empty()) {
      ++errors;
      std::fprintf(stderr, "load_bench: client error: %s\n",
                   result.error.c_str());
    }
  }

  // RSS after warm-up and at the end: the means of the samples in the
  // 5 s after the warm-up and in the last 5 s before the deadline, which
  // smooths the allocator's second-to-second swings. Samples taken after
  // the deadline, while clients disconnect, are left out.
  const auto mean_rss = [&](double from, double to) {
    double sum = 0;
    int count = 0;
    for (const auto& [at, kib] : rss_samples)
      if (at >= from && at < to) {
        sum += static_cast<double>(kib);
        ++count;
      }
    return count > 0 ? sum / count : 0.0;
  };
  const double rss_warm =
      mean_rss(opts.warmup_seconds, std::min(opts.warmup_seconds + 5,
                                             opts.seconds));
  const double rss_end = mean_rss(
      std::max(opts.seconds - 5, opts.warmup_seconds), opts.seconds);
  uint64_t rss_max = 0;
  for (const auto& sample : rss_samples)
    rss_max = std::max(rss_max, sample.second);
  const double measured = opts.seconds - opts.warmup_seconds;
  const double growth = rss_warm > 0 ? (rss_end - rss_warm) / rss_warm : 0;

  std::printf("RSS of pid %d (MiB, one sample per second):", opts.pid);
  for (size_t i = 0; i < rss_samples.size(); i += 5)
    std::printf(" %.0fs=%.1f", rss_samples[i].first,
                rss_samples[i].second / 1024.0);
  std::printf("\n");
  const double p50 = percentile(latencies, 0.50);
  const double p99 = percentile(latencies, 0.99);
  std::printf(
      "%d clients on %d ranks: %llu batches in %.0f s after a %d s warm-up; "
      "steps reached %llu..%llu; %d client errors\n",
      opts.clients, opts.ranks, static_cast<unsigned long long>(batches),
      measured, opts.warmup_seconds, static_cast<unsigned long long>(min_step),
      static_cast<unsigned long long>(max_step), errors);
  std::printf(
      "{\"bench\":\"load\",\"clients\":%d,\"ranks\":%d,\"prefetch\":%u,"
      "\"seconds\":%d,\"warmup_seconds\":%d,\"batches\":%llu,"
      "\"batches_per_s\":%.1f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,"
      "\"rss_after_warmup_mib\":%.1f,\"rss_end_mib\":%.1f,"
      "\"rss_max_mib\":%.1f,\"rss_growth_fraction\":%.4f,"
      "\"client_errors\":%d}\n",
      opts.clients, opts.ranks, opts.prefetch, opts.seconds,
      opts.warmup_seconds, static_cast<unsigned long long>(batches),
      batches / measured, p50, p99, rss_warm / 1024.0, rss_end / 1024.0,
      rss_max / 1024.0, growth, errors);
  return errors == 0 ? 0 : 1;
}
