// Input size limits: ZeroMQ request size at a server, open requests per
// client, the per-source document size and the JSON Lines line bound.

#include <catch2/catch.hpp>
#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "planner/config.hpp"
#include "sources/reader.hpp"
#include "tests/test_files.hpp"
#include "transport/request_quota.hpp"
#include "transport/router_server.hpp"

using overlord::error;
using overlord::sources::jsonl_line_limit;
using overlord::sources::read_shard;
using overlord::sources::reader_options;
using overlord::sources::shard_format;
using overlord::testing::temp_dir;
using overlord::transport::request_quota;
using overlord::transport::router_server;

namespace {

// Frames the server handed to its handler, for checks from the test thread.
struct received_frames {
  std::mutex mutex;
  std::vector<std::string> frames;

  size_t count() {
    std::lock_guard<std::mutex> guard(mutex);
    return frames.size();
  }
};

// Waits up to `timeout` for `frames` to hold `expected` frames.
bool wait_for(received_frames& frames, size_t expected,
              std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (frames.count() >= expected)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return frames.count() >= expected;
}

zmq::socket_t connect_dealer(zmq::context_t& context,
                             const std::string& endpoint) {
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);
  return dealer;
}

reader_options jsonl_options(uint64_t max_document_bytes) {
  reader_options options;
  options.format = shard_format::jsonl;
  options.max_document_bytes = max_document_bytes;
  return options;
}

}  // namespace

TEST_CASE("router server drops oversize message", "[limits]") {
  zmq::context_t context(1);
  router_server server(context, 256);
  auto endpoint = server.bind("tcp://127.0.0.1:0");
  received_frames received;
  server.start([&](const std::string&, std::string_view frame) {
    std::lock_guard<std::mutex> guard(received.mutex);
    received.frames.emplace_back(frame);
  });

  auto big = connect_dealer(context, endpoint);
  big.send(zmq::buffer(std::string(10000, 'x')), zmq::send_flags::none);
  CHECK_FALSE(wait_for(received, 1, std::chrono::milliseconds(500)));

  // The server still serves other clients.
  auto small = connect_dealer(context, endpoint);
  small.send(zmq::buffer(std::string("hello")), zmq::send_flags::none);
  REQUIRE(wait_for(received, 1, std::chrono::seconds(5)));
  CHECK(received.frames[0] == "hello");
  server.stop();
}

TEST_CASE("router server counts multipart request", "[limits]") {
  zmq::context_t context(1);
  router_server server(context, 256);
  auto endpoint = server.bind("tcp://127.0.0.1:0");
  received_frames received;
  server.start([&](const std::string&, std::string_view frame) {
    std::lock_guard<std::mutex> guard(received.mutex);
    received.frames.emplace_back(frame);
  });

  auto dealer = connect_dealer(context, endpoint);
  dealer.send(zmq::buffer(std::string("one")), zmq::send_flags::sndmore);
  dealer.send(zmq::buffer(std::string("two")), zmq::send_flags::none);
  dealer.send(zmq::buffer(std::string("single")), zmq::send_flags::none);
  REQUIRE(wait_for(received, 1, std::chrono::seconds(5)));
  CHECK(received.frames[0] == "single");
  CHECK(received.count() == 1);
  CHECK(server.rejected_frames() == 1);
  server.stop();
}

TEST_CASE("request quota bounds each client", "[limits]") {
  request_quota quota(2);
  CHECK(quota.try_open("a"));
  CHECK(quota.try_open("a"));
  CHECK_FALSE(quota.try_open("a"));
  CHECK(quota.rejected() == 1);
  CHECK(quota.open("a") == 2);

  // Another client has its own allowance.
  CHECK(quota.try_open("b"));
  CHECK(quota.open("b") == 1);

  // A reply frees one slot.
  quota.close("a");
  CHECK(quota.open("a") == 1);
  CHECK(quota.try_open("a"));
  CHECK(quota.rejected() == 1);

  quota.clear();
  CHECK(quota.open("a") == 0);
  CHECK(quota.open("b") == 0);
}

TEST_CASE("request quota ignores unknown close", "[limits]") {
  request_quota quota(1);
  quota.close("nobody");
  CHECK(quota.open("nobody") == 0);
  CHECK(quota.try_open("nobody"));
  CHECK_FALSE(quota.try_open("nobody"));
}

TEST_CASE("jsonl reader skips oversize line", "[limits]") {
  temp_dir dir("limits-line");
  const uint64_t max_bytes = 10;
  const uint64_t limit = jsonl_line_limit(max_bytes);
  CHECK(limit == 6 * max_bytes + 64 * 1024);

  // The long line spans several read chunks; only its length is kept.
  std::string long_line =
      "{\"text\": \"" + std::string(3 * limit, 'a') + "\"}";
  auto path = dir.write("a.jsonl", long_line + "\n{\"text\": \"short\"}\n");
  auto result = read_shard(path, "a.jsonl", jsonl_options(max_bytes));

  REQUIRE(result.documents.size() == 1);
  CHECK(result.documents[0].text == "short");
  CHECK(result.documents[0].key == "a.jsonl:2");
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "oversize");
  CHECK(result.skipped[0].where == "a.jsonl:1");
  CHECK(result.skipped[0].detail.find(std::to_string(long_line.size())) !=
        std::string::npos);
}

TEST_CASE("jsonl reader skips oversize last line", "[limits]") {
  temp_dir dir("limits-last-line");
  const uint64_t limit = jsonl_line_limit(1);
  auto path = dir.write("a.jsonl", "{\"text\": \"ok\"}\n" +
                                       std::string(limit + 1, ' '));
  auto result = read_shard(path, "a.jsonl", jsonl_options(1 << 20));
  CHECK(result.documents.size() == 1);
  CHECK(result.skipped.empty());

  auto small = read_shard(path, "a.jsonl", jsonl_options(1));
  REQUIRE(small.skipped.size() == 2);
  CHECK(small.skipped[0].kind == "oversize");
  CHECK(small.skipped[0].where == "a.jsonl:1");
  CHECK(small.skipped[1].kind == "oversize");
  CHECK(small.skipped[1].where == "a.jsonl:2");
}

TEST_CASE("jsonl reader fails on oversize line", "[limits]") {
  temp_dir dir("limits-fail");
  auto options = jsonl_options(1);
  options.fail_on_bad_input = true;
  auto path = dir.write(
      "a.jsonl", std::string(jsonl_line_limit(1) + 5, 'x') + "\n");
  CHECK_THROWS_AS(read_shard(path, "a.jsonl", options), error);
}

TEST_CASE("jsonl reader keeps document under limit", "[limits]") {
  // A document at the limit whose JSON escapes make its line 6 times
  // longer still fits under the line bound.
  temp_dir dir("limits-escapes");
  const uint64_t max_bytes = 100000;
  std::string escaped;
  for (uint64_t i = 0; i < max_bytes; ++i)
    escaped += "\\u0001";
  auto path = dir.write("a.jsonl", "{\"text\": \"" + escaped + "\"}\n");
  auto result = read_shard(path, "a.jsonl", jsonl_options(max_bytes));
  REQUIRE(result.documents.size() == 1);
  CHECK(result.documents[0].text.size() == max_bytes);
  CHECK(result.skipped.empty());
}

TEST_CASE("text reader rejects oversize file unread", "[limits]") {
  temp_dir dir("limits-text");
  reader_options options;
  options.format = shard_format::text;
  options.max_document_bytes = 4;
  auto path = dir.write("big.txt", "12345");
  auto result = read_shard(path, "big.txt", options);
  CHECK(result.documents.empty());
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "oversize");
}

TEST_CASE("config reads per-source document limit", "[limits]") {
  temp_dir dir("limits-config");
  dir.write("gpt2/encoder.json", "{}");
  dir.write("gpt2/vocab.bpe", "");
  dir.write("mail/a.jsonl", "{\"text\": \"a\"}\n");
  dir.write("books/one.txt", "one");
  auto path = dir.write("job.yaml",
                        "tokenizer: gpt2\n"
                        "max_document_bytes: 1000\n"
                        "max_request_bytes: 8192\n"
                        "max_client_requests: 3\n"
                        "sources:\n"
                        "  - name: mail\n"
                        "    format: jsonl\n"
                        "    paths: mail/*.jsonl\n"
                        "    max_document_bytes: 20\n"
                        "  - name: books\n"
                        "    format: text\n"
                        "    paths: books/*.txt\n");
  auto config = overlord::planner::load_config(path);
  CHECK(config.max_document_bytes_of(0) == 20);
  CHECK(config.max_document_bytes_of(1) == 1000);
  CHECK(config.max_request_bytes == 8192);
  CHECK(config.max_client_requests == 3);

  auto overridden = overlord::planner::load_config(
      path, {{"sources.books.max_document_bytes", "7"}});
  CHECK(overridden.max_document_bytes_of(1) == 7);

  CHECK_THROWS_AS(overlord::planner::load_config(
                      path, {{"sources.mail.max_document_bytes", "0"}}),
                  error);
  CHECK_THROWS_AS(
      overlord::planner::load_config(path, {{"max_client_requests", "0"}}),
      error);
  CHECK_THROWS_AS(
      overlord::planner::load_config(path, {{"max_request_bytes", "10"}}),
      error);
}
