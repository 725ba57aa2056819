// Simulated synchronous trainers for bench/stall. One thread per rank
// pulls batches from its constructor. Each step, every rank "computes" for
// a fixed time, then waits for its next batch. The step ends when the
// slowest rank has its batch, as in synchronous data-parallel training.
// A rank's wait for data is the time its next() call took, less the time
// its thread was ready to run but had no core (the scheduler's run-queue
// delay from /proc/thread-self/schedstat). Here the trainers share two
// cores with the loader, and a trainer thread often sat ready for 4 to 11
// ms at a step boundary while its batch had already arrived. On a GPU host
// trainers have cores of their own, so that time is not a data stall.
// Delay before the batch arrived is subtracted too, so the figure is a
// lower bound on the data wait. The summary reports the wall-clock figures
// as well.
//
// Prints one line per step and a JSON summary. A step's line has the wait
// for data, the images of the ranks' batches, and per rank the request time
// (wall-clock ms since the epoch, to match with the daemon's log), the
// wall-clock wait and the run-queue delay.
//
//   stall_trainer --port BASE_PORT --ranks R --steps N --step-ms MS
//                 [--prefetch K] [--wait-threshold-ms T]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <numeric>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <thread>
#include <vector>

#include "client/client.hpp"
#include "common/error.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

// Set once a reading shows run time. A kernel that collects no scheduler
// statistics reports "0 0 0" for every thread. A new thread can read 0 too,
// before its first tick, so one reading cannot tell.
std::atomic<bool> run_time_seen{false};

// Reads one thread's total run-queue delay from its schedstat file, which
// it keeps open so that each reading is a single pread() call.
class run_queue_reader {
 public:
  run_queue_reader() : fd_(open("/proc/thread-self/schedstat", O_RDONLY)) {}
  ~run_queue_reader() {
    if (fd_ >= 0)
      close(fd_);
  }
  run_queue_reader(const run_queue_reader&) = delete;
  run_queue_reader& operator=(const run_queue_reader&) = delete;

  // Returns the delay in nanoseconds, or -1 when the kernel does not
  // report it.
  long long read_ns() {
    char text[128];
    const ssize_t size = fd_ < 0 ? -1 : pread(fd_, text, sizeof text - 1, 0);
    if (size <= 0)
      return -1;
    text[size] = '\0';
    long long running = 0;
    long long queued = -1;
    if (std::sscanf(text, "%lld %lld", &running, &queued) != 2)
      return -1;
    if (running > 0)
      run_time_seen = true;
    return queued;
  }

 private:
  int fd_;
};

// Releases the ranks of a step together. A rank that fails leaves the
// gate, so the others do not wait for it forever.
class step_gate {
 public:
  explicit step_gate(int ranks) : ranks_(ranks) {}

  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    uint64_t round = round_;
    if (++arrived_ >= ranks_) {
      next_round();
      return;
    }
    changed_.wait(lock, [&] { return round_ != round; });
  }

  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--ranks_ <= arrived_)
      next_round();
  }

 private:
  void next_round() {
    arrived_ = 0;
    ++round_;
    changed_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  int ranks_;
  int arrived_ = 0;
  uint64_t round_ = 0;
};

struct options {
  std::string host = "127.0.0.1";
  int base_port = 0;
  int ranks = 1;
  int steps = 100;
  int step_ms = 100;
  int prefetch = 2;
  double wait_threshold_ms = 5;
  int warmup = 0;  // steps left out of the rate
};

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "stall_trainer: %s\nusage: stall_trainer --port BASE_PORT "
               "--ranks R --steps N --step-ms MS [--prefetch K] "
               "[--wait-threshold-ms T] [--warmup N]\n",
               problem);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options out;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc)
      usage(("missing value for " + flag).c_str());
    std::string value = argv[++i];
    try {
      if (flag == "--port")
        out.base_port = std::stoi(value);
      else if (flag == "--ranks")
        out.ranks = std::stoi(value);
      else if (flag == "--steps")
        out.steps = std::stoi(value);
      else if (flag == "--step-ms")
        out.step_ms = std::stoi(value);
      else if (flag == "--prefetch")
        out.prefetch = std::stoi(value);
      else if (flag == "--wait-threshold-ms")
        out.wait_threshold_ms = std::stod(value);
      else if (flag == "--warmup")
        out.warmup = std::stoi(value);
      else
        usage(("unknown flag " + flag).c_str());
    } catch (const std::exception&) {
      usage(("bad number for " + flag).c_str());
    }
  }
  if (out.base_port <= 0 || out.ranks < 1 || out.steps < 1 || out.step_ms < 0)
    usage("--port, --ranks, --steps and --step-ms are required and positive");
  if (out.warmup < 0 || out.warmup >= out.steps)
    usage("--warmup must be below --steps");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  auto opts = parse(argc, argv);
  // wait_ms[step][rank]: how long the rank waited for the step's batch
  // after it was ready for it.
  std::vector<std::vector<double>> wait_ms(opts.steps,
                                           std::vector<double>(opts.ranks, 0));
  // queued_ms[step][rank]: of that wait, the time the rank's thread was
  // ready to run but not running; -1 when the kernel does not report it.
  std::vector<std::vector<double>> queued_ms(
      opts.steps, std::vector<double>(opts.ranks, 0));
  // images[step][rank]: images in the rank's batch, which set its cost.
  std::vector<std::vector<int>> images(opts.steps, std::vector<int>(opts.ranks, 0));
  // requested_at[step][rank]: wall-clock time of the request, in ms since
  // the epoch, to match a wait with the daemon's log lines.
  std::vector<std::vector<double>> requested_at(
      opts.steps, std::vector<double>(opts.ranks, 0));
  std::vector<std::string> failures(opts.ranks);
  // When rank 0 started the step after the warm-up, and when it finished.
  clock_type::time_point measured_from, measured_to;
  // Every rank starts computing a step when all have their batch.
  step_gate step_barrier(opts.ranks);

  std::vector<std::thread> threads;
  for (int rank = 0; rank < opts.ranks; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        overlord::client::client_options client;
        client.endpoint = "tcp://" + opts.host + ":" +
                          std::to_string(opts.base_port + rank);
        client.rank = static_cast<uint32_t>(rank);
        client.prefetch = static_cast<uint32_t>(opts.prefetch);
        client.timeout = std::chrono::milliseconds(60000);
        overlord::client::batch_client puller(client);
        run_queue_reader run_queue;
        for (int step = 0; step < opts.steps; ++step) {
          // A thread is most often preempted on its way out of a system call,
          // after the call took its reading. So the first reading follows the
          // start of the timed span and the second follows its end: a
          // preemption as either returns then counts in both the wait and
          // the delay, or in neither. One in the few instructions between
          // the end and the second reading counts in the delay only, which
          // keeps the data wait a lower bound.
          auto requested = clock_type::now();
          requested_at[step][rank] =
              std::chrono::duration<double, std::milli>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
          const long long queued_before = run_queue.read_ns();
          auto batch = puller.next();
          const auto received = clock_type::now();
          const long long queued_after = run_queue.read_ns();
          wait_ms[step][rank] =
              std::chrono::duration<double, std::milli>(received - requested)
                  .count();
          queued_ms[step][rank] =
              queued_before < 0 || queued_after < 0
                  ? -1
                  : static_cast<double>(queued_after - queued_before) / 1e6;
          if (const auto* list = batch.batch().images())
            images[step][rank] = static_cast<int>(list->size());
          if (batch.batch().step() != static_cast<uint64_t>(step))
            throw std::runtime_error("received step " +
                                     std::to_string(batch.batch().step()) +
                                     " for " + std::to_string(step));
          step_barrier.arrive_and_wait();
          if (rank == 0 && step == opts.warmup)
            measured_from = clock_type::now();
          std::this_thread::sleep_for(std::chrono::milliseconds(opts.step_ms));
          if (rank == 0 && step == opts.steps - 1)
            measured_to = clock_type::now();
        }
      } catch (const std::exception& e) {
        failures[rank] = e.what();
        step_barrier.leave();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (int rank = 0; rank < opts.ranks; ++rank)
    if (!failures[rank].empty()) {
      std::fprintf(stderr, "stall_trainer: rank=%d failed: %s\n", rank,
                   failures[rank].c_str());
      return 1;
    }

  // A synchronous step waits for its slowest rank. The first step waits
  // for the job to start, which is not a stall.
  bool queue_known = true;
  double waited = 0;
  double wall_waited = 0;
  double queued_total = 0;
  int last_waiting = -1;
  int last_wall_waiting = -1;
  // The wall-clock wait for step 0: the job's start, including any lead
  // the constructors build first (startup_prefetch_steps).
  double first_batch_ms = 0;
  for (int step = 0; step < opts.steps; ++step) {
    double wait = 0;
    double wall = 0;
    for (int rank = 0; rank < opts.ranks; ++rank) {
      const double queued = std::max(0.0, queued_ms[step][rank]);
      queue_known = queue_known && queued_ms[step][rank] >= 0;
      wait = std::max(wait, std::max(0.0, wait_ms[step][rank] - queued));
      wall = std::max(wall, wait_ms[step][rank]);
      if (step > 0)
        queued_total += queued;
    }
    std::printf("step %d wait_ms %.1f images %d requested_at_ms", step, wait,
                std::accumulate(images[step].begin(), images[step].end(), 0));
    for (double at : requested_at[step])
      std::printf(" %.1f", at);
    std::printf(" wall_wait_ms");
    for (double rank_wait : wait_ms[step])
      std::printf(" %.1f", rank_wait);
    std::printf(" run_queue_ms");
    for (double queued : queued_ms[step])
      std::printf(" %.1f", queued);
    std::printf("\n");
    if (step == 0) {
      first_batch_ms = wall;
      continue;
    }
    waited += wait;
    wall_waited += wall;
    if (wait > opts.wait_threshold_ms)
      last_waiting = step;
    if (wall > opts.wait_threshold_ms)
      last_wall_waiting = step;
  }
  // The whole process's page faults are reported, because receiving batches
  // into fresh memory costs the trainer time that its waits do not show.
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  double computed = static_cast<double>(opts.steps - 1) * opts.step_ms;
  const double measured_s =
      std::chrono::duration<double>(measured_to - measured_from).count();
  std::printf(
      "{\"steps\": %d, \"step_ms\": %d, \"wait_fraction\": %.4f, "
      "\"steps_to_no_wait\": %d, \"waited_ms\": %.1f, "
      "\"wall_wait_fraction\": %.4f, \"wall_steps_to_no_wait\": %d, "
      "\"wall_waited_ms\": %.1f, \"run_queue_ms\": %.1f, "
      "\"run_queue_measured\": %s, \"steps_per_s\": %.3f, "
      "\"minor_faults\": %ld, \"first_batch_ms\": %.1f}\n",
      opts.steps, opts.step_ms, waited / (waited + computed),
      last_waiting < 0 ? 0 : last_waiting + 1, waited,
      wall_waited / (wall_waited + computed),
      last_wall_waiting < 0 ? 0 : last_wall_waiting + 1, wall_waited,
      queued_total, queue_known && run_time_seen ? "true" : "false",
      measured_s > 0 ? (opts.steps - opts.warmup) / measured_s : 0.0,
      usage.ru_minflt, first_batch_ms);
  return 0;
}
