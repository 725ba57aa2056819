#include "actors/tls.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include <cstdio>
#include <memory>

#include "common/error.hpp"

namespace overlord::actors {

namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw error(errc::invalid_config, message);
}

std::string openssl_reason() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0)
    return "no details";
  const char* reason = ERR_reason_error_string(code);
  return reason ? reason : "code " + std::to_string(code);
}

using file_ptr = std::unique_ptr<FILE, int (*)(FILE*)>;

file_ptr open_pem(const std::string& path, const std::string& flag) {
  file_ptr file(std::fopen(path.c_str(), "r"), &std::fclose);
  if (!file)
    invalid(flag + " " + path + ": cannot open the file; give a readable "
                                "PEM file (scripts/gen-certs DIR makes them)");
  return file;
}

using x509_ptr = std::unique_ptr<X509, void (*)(X509*)>;

x509_ptr read_certificate(const std::string& path, const std::string& flag) {
  auto file = open_pem(path, flag);
  x509_ptr cert(PEM_read_X509(file.get(), nullptr, nullptr, nullptr),
                &X509_free);
  if (!cert)
    invalid(flag + " " + path + ": not a PEM certificate (" +
            openssl_reason() + ")");
  return cert;
}

}  // namespace

void check_tls_files(const tls_files& files) {
  if (files.certificate.empty() || files.key.empty() || files.ca.empty())
    invalid("TLS needs all of --tls-cert, --tls-key and --tls-ca; give the "
            "missing ones or none of them");

  auto cert = read_certificate(files.certificate, "--tls-cert");
  auto ca = read_certificate(files.ca, "--tls-ca");

  auto key_file = open_pem(files.key, "--tls-key");
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> key(
      PEM_read_PrivateKey(key_file.get(), nullptr, nullptr, nullptr),
      &EVP_PKEY_free);
  if (!key)
    invalid("--tls-key " + files.key +
            ": not an unencrypted PEM private key (" + openssl_reason() + ")");
  if (X509_check_private_key(cert.get(), key.get()) != 1)
    invalid("--tls-key " + files.key + " does not belong to --tls-cert " +
            files.certificate + "; give the key the certificate was made for");

  std::unique_ptr<X509_STORE, void (*)(X509_STORE*)> store(X509_STORE_new(),
                                                          &X509_STORE_free);
  std::unique_ptr<X509_STORE_CTX, void (*)(X509_STORE_CTX*)> context(
      X509_STORE_CTX_new(), &X509_STORE_CTX_free);
  if (!store || !context || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(context.get(), store.get(), cert.get(), nullptr) !=
          1)
    invalid("cannot set up certificate verification: " + openssl_reason());
  if (X509_verify_cert(context.get()) != 1)
    invalid("--tls-cert " + files.certificate +
            " does not verify against --tls-ca " + files.ca + ": " +
            X509_verify_cert_error_string(
                X509_STORE_CTX_get_error(context.get())) +
            "; give the CA that signed it, or a certificate it signed");
  ERR_clear_error();
}

void enable_tls(caf::actor_system_config& config, const tls_files& files) {
  // CAF's OpenSSL module turns on peer verification (both directions) as
  // soon as any of these options is set.
  config.openssl_certificate = files.certificate;
  config.openssl_key = files.key;
  config.openssl_cafile = files.ca;
  config.load<caf::openssl::manager>();
}

bool tls_enabled(caf::actor_system& system) {
  return system.has_openssl_manager();
}

caf::expected<uint16_t> publish_actor(caf::actor_system& system,
                                      const caf::actor& actor, uint16_t port,
                                      const std::string& address) {
  if (tls_enabled(system))
    return caf::openssl::publish(actor, port, address.c_str(), true);
  return system.middleman().publish(actor, port, address.c_str(), true);
}

caf::expected<caf::actor> connect_actor(caf::actor_system& system,
                                        const std::string& host, uint16_t port,
                                        std::chrono::milliseconds timeout) {
  // The middleman actor's connect request is what remote_actor sends.
  // Sending it here bounds the wait, which remote_actor takes no timeout
  // for.
  caf::io::middleman_actor manager =
      tls_enabled(system) ? system.openssl_manager().actor_handle()
                          : system.middleman().actor_handle();
  caf::scoped_actor self{system};
  caf::expected<caf::actor> result{caf::sec::request_timeout};
  self->request(manager, timeout, caf::connect_atom::value, host, port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& found,
              const std::set<std::string>&) {
            if (found)
              result = caf::actor_cast<caf::actor>(std::move(found));
            else
              result = caf::make_error(caf::sec::no_actor_published_at_port,
                                       "no actor published at port " +
                                           std::to_string(port));
          },
          [&](caf::error& err) { result = std::move(err); });
  return result;
}

bool is_loopback_address(const std::string& address) {
  if (address == "localhost" || address == "::1" || address == "[::1]")
    return true;
  in_addr parsed{};
  if (inet_pton(AF_INET, address.c_str(), &parsed) != 1)
    return false;
  return (ntohl(parsed.s_addr) >> 24) == 127;
}

void require_secure_bind(const std::string& address, const std::string& what,
                         bool secured, bool insecure, const std::string& fix) {
  if (secured || insecure || is_loopback_address(address))
    return;
  invalid("will not serve " + what + " on " + address +
          " because it is not a loopback address, so anyone who reaches it "
          "could read or steer the job. Give " + fix +
          " (scripts/gen-certs DIR makes test ones), bind to 127.0.0.1, or "
          "pass --insecure on a network you trust");
}

}  // namespace overlord::actors
