// Trainer-visible gap when a constructor dies: pulls a rank's batches
// through the planner at a fixed simulated step time, kills the process
// serving the rank (SIGKILL) right after a chosen step, and reports the
// time from the kill to the next batch against the normal step time.
//
// usage: recovery_bench --planner HOST:PORT --rank R --steps N --step-ms M
//                       --kill-after S --kill-pid PID
// Prints one JSON line.

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.hpp"
#include "common/error.hpp"
#include "tools/admin_client.hpp"
#include "transport/wire.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string planner;
  uint32_t rank = 0;
  uint64_t steps = 100, step_ms = 100, kill_after = 50;
  int kill_pid = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--planner")
      planner = value;
    else if (flag == "--rank")
      rank = static_cast<uint32_t>(std::stoul(value));
    else if (flag == "--steps")
      steps = std::stoull(value);
    else if (flag == "--step-ms")
      step_ms = std::stoull(value);
    else if (flag == "--kill-after")
      kill_after = std::stoull(value);
    else if (flag == "--kill-pid")
      kill_pid = std::stoi(value);
  }
  if (planner.empty() || kill_pid <= 0) {
    std::cerr << "usage: recovery_bench --planner HOST:PORT --rank R --steps N "
                 "--step-ms M --kill-after S --kill-pid PID\n";
    return 2;
  }

  try {
    overlord::tools::admin_client admin(planner, std::chrono::seconds(10));
    auto endpoints = admin.endpoints(rank);
    overlord::client::client_options options;
    options.endpoint = endpoints.at(0).first;
    options.node = endpoints.at(0).second;
    for (const auto& [endpoint, node] : endpoints)
      options.fallback_endpoints.push_back(endpoint);
    options.rank = rank;
    options.timeout = std::chrono::seconds(30);
    options.resolve = [&admin, rank] { return admin.endpoints(rank); };
    overlord::client::batch_client client(options);

    std::vector<clock_type::time_point> received;
    std::vector<std::string> digests;
    clock_type::time_point killed_at{};
    for (uint64_t step = 0; step < steps; ++step) {
      auto batch = client.next();
      received.push_back(clock_type::now());
      if (batch.batch().step() != step)
        throw overlord::error(overlord::errc::internal,
                              "received step " +
                                  std::to_string(batch.batch().step()) +
                                  " where " + std::to_string(step) +
                                  " was expected");
      if (step == kill_after) {
        ::kill(kill_pid, SIGKILL);
        killed_at = clock_type::now();
      }
      // The simulated training step.
      std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
    }

    // The normal step: median interval between batches before the kill.
    std::vector<double> intervals;
    for (uint64_t s = 1; s <= kill_after; ++s)
      intervals.push_back(ms_between(received[s - 1], received[s]));
    std::sort(intervals.begin(), intervals.end());
    double normal = intervals.empty() ? 0 : intervals[intervals.size() / 2];
    // The batch after the kill: the trainer asks for it one simulated step
    // later, so the extra wait is its interval minus the normal one.
    double interval = ms_between(received[kill_after], received[kill_after + 1]);
    double gap = std::max(0.0, interval - normal);
    double kill_to_batch = ms_between(killed_at, received[kill_after + 1]);
    std::printf(
        "{\"bench\":\"recovery_gap\",\"step_ms\":%.2f,\"interval_after_kill_ms\":"
        "%.2f,\"gap_ms\":%.2f,\"kill_to_batch_ms\":%.2f,\"failovers\":%u,"
        "\"steps\":%llu}\n",
        normal, interval, gap, kill_to_batch, client.failovers(),
        static_cast<unsigned long long>(steps));
    return 0;
  } catch (const overlord::error& e) {
    std::cerr << "recovery_bench: " << e.what() << "\n";
    return 1;
  }
}
