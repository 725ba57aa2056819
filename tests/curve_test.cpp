// CURVE keys and the ZAP handler, over real sockets on 127.0.0.1.

#include <catch2/catch.hpp>
#include <zmq.hpp>

#include <chrono>
#include <string>

#include "common/error.hpp"
#include "tests/test_files.hpp"
#include "transport/curve.hpp"

using overlord::error;
using overlord::testing::temp_dir;
using namespace overlord::transport;

namespace {

curve_keys make_keys() {
  char public_key[41] = {};
  char secret_key[41] = {};
  REQUIRE(zmq_curve_keypair(public_key, secret_key) == 0);
  curve_keys keys;
  keys.public_key = public_key;
  keys.secret_key = secret_key;
  return keys;
}

// Sends "ping" from a CURVE client with `client` keys to a ROUTER that
// echoes, and returns whether the echo arrived within one second.
bool round_trip(zmq::context_t& context, const std::string& endpoint,
                zmq::socket_t& server, const curve_keys& client,
                const std::string& server_public) {
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  set_curve_client(dealer, client.secret_key, client.public_key,
                   server_public);
  dealer.connect(endpoint);
  dealer.send(zmq::buffer(std::string("ping")), zmq::send_flags::none);

  zmq::pollitem_t item{static_cast<void*>(server), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, std::chrono::milliseconds(1000)) <= 0)
    return false;
  zmq::message_t id;
  zmq::message_t body;
  (void)server.recv(id);
  (void)server.recv(body);
  server.send(id, zmq::send_flags::sndmore);
  server.send(body, zmq::send_flags::none);

  zmq::pollitem_t reply{static_cast<void*>(dealer), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&reply, 1, std::chrono::milliseconds(1000)) <= 0)
    return false;
  zmq::message_t echo;
  (void)dealer.recv(echo);
  return echo.to_string() == "ping";
}

}  // namespace

TEST_CASE("zap handler admits authorized key only", "[curve]") {
  require_curve();
  zmq::context_t context(1);
  auto server_keys = make_keys();
  auto allowed = make_keys();
  auto stranger = make_keys();
  std::string rejected_key;
  zap_handler zap(context, {allowed.public_key},
                  [&](const std::string&, const std::string& key) {
                    rejected_key = key;
                  });

  zmq::socket_t server(context, zmq::socket_type::router);
  server.set(zmq::sockopt::linger, 0);
  set_curve_server(server, server_keys);
  server.bind("tcp://127.0.0.1:0");
  auto endpoint = server.get(zmq::sockopt::last_endpoint);

  CHECK(round_trip(context, endpoint, server, allowed, server_keys.public_key));
  CHECK(zap.accepted() == 1);

  CHECK_FALSE(
      round_trip(context, endpoint, server, stranger, server_keys.public_key));
  CHECK(zap.rejected() == 1);
  CHECK(rejected_key == stranger.public_key);

  // A client with the wrong server key never completes the handshake.
  CHECK_FALSE(round_trip(context, endpoint, server, allowed,
                         stranger.public_key));
  CHECK(zap.accepted() == 1);
  server.close();
}

TEST_CASE("curve key files are checked", "[curve]") {
  temp_dir dir("curve-files");
  auto keys = make_keys();
  auto secret = dir.write("node.curve-secret", keys.secret_key + "\n");
  auto loaded = read_secret_key(secret, "--curve-secret");
  CHECK(loaded.secret_key == keys.secret_key);
  CHECK(loaded.public_key == keys.public_key);

  auto authorized = dir.write("authorized", "# trainers\n\n" +
                                                keys.public_key + "\n");
  auto set = read_authorized_keys(authorized, "--curve-authorized");
  CHECK(set.size() == 1);
  CHECK(set.count(keys.public_key) == 1);

  auto short_key = dir.write("short", "abc\n");
  CHECK_THROWS_AS(read_public_key(short_key, "--curve-server-public"), error);
  auto two = dir.write("two", keys.public_key + "\n" + keys.public_key + "\n");
  CHECK_THROWS_AS(read_secret_key(two, "--curve-secret"), error);
  auto empty = dir.write("empty", "# nobody\n");
  CHECK_THROWS_AS(read_authorized_keys(empty, "--curve-authorized"), error);
  auto bad = dir.write("bad", keys.public_key + "\nnot a key\n");
  CHECK_THROWS_AS(read_authorized_keys(bad, "--curve-authorized"), error);
  CHECK_THROWS_AS(read_public_key(dir.path().string() + "/missing", "--x"),
                  error);
}
