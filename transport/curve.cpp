#include "transport/curve.hpp"

#include <fstream>
#include <vector>

#include "common/error.hpp"

namespace overlord::transport {

namespace {

constexpr size_t z85_key_length = 40;

[[noreturn]] void invalid(const std::string& message) {
  throw error(errc::invalid_config, message);
}

std::string trim(const std::string& text) {
  size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos)
    return "";
  size_t end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

bool is_z85_key(const std::string& text) {
  if (text.size() != z85_key_length)
    return false;
  uint8_t decoded[32];
  return zmq_z85_decode(decoded, text.c_str()) != nullptr;
}

// The non-blank lines of `path` that are not comments, with their line
// numbers.
std::vector<std::pair<size_t, std::string>> key_lines(
    const std::string& path, const std::string& flag) {
  std::ifstream in(path);
  if (!in)
    invalid(flag + " " + path + ": cannot open the file; give a readable key "
                                "file (scripts/gen-certs DIR makes them)");
  std::vector<std::pair<size_t, std::string>> lines;
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    // A key file is a few lines; anything longer is not one.
    if (number > 100000)
      invalid(flag + " " + path + ": too many lines for a key file");
    auto text = trim(line);
    if (text.empty() || text[0] == '#')
      continue;
    lines.emplace_back(number, text);
  }
  return lines;
}

std::string single_key(const std::string& path, const std::string& flag) {
  auto lines = key_lines(path, flag);
  if (lines.size() != 1)
    invalid(flag + " " + path + ": expected one Z85 key (40 characters), "
                                "found " + std::to_string(lines.size()) +
            " lines");
  if (!is_z85_key(lines[0].second))
    invalid(flag + " " + path + ":" + std::to_string(lines[0].first) +
            ": not a Z85 CURVE key (40 characters)");
  return lines[0].second;
}

}  // namespace

void require_curve() {
  if (!zmq_has("curve"))
    invalid("this libzmq has no CURVE support (zmq_has(\"curve\") is false); "
            "install a libzmq built with libsodium, such as Debian's "
            "libzmq5");
}

curve_keys read_secret_key(const std::string& path, const std::string& flag) {
  require_curve();
  curve_keys keys;
  keys.secret_key = single_key(path, flag);
  char derived[z85_key_length + 1] = {};
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0)
    invalid(flag + " " + path + ": cannot derive the public key from it");
  keys.public_key = derived;
  return keys;
}

std::string read_public_key(const std::string& path, const std::string& flag) {
  return single_key(path, flag);
}

std::set<std::string> read_authorized_keys(const std::string& path,
                                           const std::string& flag) {
  std::set<std::string> keys;
  for (const auto& [number, text] : key_lines(path, flag)) {
    if (!is_z85_key(text))
      invalid(flag + " " + path + ":" + std::to_string(number) +
              ": not a Z85 CURVE public key (40 characters)");
    keys.insert(text);
  }
  if (keys.empty())
    invalid(flag + " " + path + ": no keys; list the public keys of the "
                                "clients that may connect, one per line");
  return keys;
}

void set_curve_server(zmq::socket_t& socket, const curve_keys& keys) {
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  // A ZAP domain makes libzmq consult the handler for every connection.
  socket.set(zmq::sockopt::zap_domain, "overlord");
}

void set_curve_client(zmq::socket_t& socket, const std::string& secret_key,
                      const std::string& public_key,
                      const std::string& server_public_key) {
  socket.set(zmq::sockopt::curve_serverkey, server_public_key);
  socket.set(zmq::sockopt::curve_publickey, public_key);
  socket.set(zmq::sockopt::curve_secretkey, secret_key);
}

zap_handler::zap_handler(zmq::context_t& context,
                         std::set<std::string> authorized,
                         reject_callback on_reject)
    : socket_(context, zmq::socket_type::rep),
      authorized_(std::move(authorized)),
      on_reject_(std::move(on_reject)) {
  socket_.set(zmq::sockopt::linger, 0);
  try {
    socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    throw error(errc::internal,
                std::string("cannot bind the ZAP handler: ") + e.what() +
                    "; only one handler may exist per ZeroMQ context");
  }
  thread_ = std::thread([this] { run(); });
}

zap_handler::~zap_handler() {
  running_ = false;
  if (thread_.joinable())
    thread_.join();
  socket_.close();
}

void zap_handler::run() {
  // A request is version, request id, domain, address, routing id,
  // mechanism and the mechanism's credentials (CURVE: the client's 32-byte
  // public key).
  while (running_) {
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    // The timeout lets the destructor stop the thread.
    if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) <= 0)
      continue;
    std::vector<zmq::message_t> frames;
    for (;;) {
      zmq::message_t frame;
      if (!socket_.recv(frame))
        break;
      bool more = frame.more();
      frames.push_back(std::move(frame));
      if (!more)
        break;
    }
    std::string request_id = frames.size() > 1 ? frames[1].to_string() : "";
    std::string address = frames.size() > 3 ? frames[3].to_string() : "";
    std::string mechanism = frames.size() > 5 ? frames[5].to_string() : "";
    std::string key;
    if (mechanism == "CURVE" && frames.size() > 6 && frames[6].size() == 32) {
      char text[z85_key_length + 1] = {};
      zmq_z85_encode(text, static_cast<const uint8_t*>(frames[6].data()), 32);
      key = text;
    }
    bool allowed = !key.empty() && authorized_.count(key) > 0;
    if (allowed)
      ++accepted_;
    else
      ++rejected_;

    const std::string status = allowed ? "200" : "400";
    const std::string text = allowed ? "OK" : "client key not authorized";
    socket_.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(status), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(text), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(key), zmq::send_flags::sndmore);
    socket_.send(zmq::message_t(), zmq::send_flags::none);
    if (!allowed && on_reject_)
      on_reject_(address, key.empty() ? mechanism : key);
  }
}

}  // namespace overlord::transport
