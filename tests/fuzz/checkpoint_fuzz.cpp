// Fuzz target: the checkpoint readers on arbitrary bytes. The input is
// read as a delta log and as a snapshot file (checkpoint/store framing:
// magic, length, CRC-32), and, because mutated payloads rarely keep a
// valid CRC-32, also handed unframed to the record decoders
// (checkpoint/records). Properties checked for every input:
// - each reader returns or throws overlord::error(invalid_input); no other
//   exception escapes;
// - a decoded record encodes and decodes back to an equal record, so a
//   snapshot that was loaded can be saved again without loss.

#include <cstddef>
#include <cstdint>
#include <cmath>
#include <string>
#include <vector>

#include "checkpoint/records.hpp"
#include "checkpoint/store.hpp"
#include "common/error.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

namespace checkpoint = overlord::checkpoint;

// Equal as numbers, or both NaN. FlatBuffers omits a scalar field equal to
// its default, so -0.0 in a table field comes back as 0.0.
bool same_double(double a, double b) {
  return a == b || (std::isnan(a) && std::isnan(b));
}

bool same_doubles(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_double(a[i], b[i]))
      return false;
  return true;
}

bool same_snapshot(const checkpoint::snapshot_record& a,
                   const checkpoint::snapshot_record& b) {
  if (a.step != b.step || a.settings != b.settings ||
      a.topology != b.topology || !same_doubles(a.weights, b.weights) ||
      !same_double(a.total_drawn, b.total_drawn) ||
      a.sources.size() != b.sources.size() ||
      a.carried.size() != b.carried.size())
    return false;
  for (std::size_t i = 0; i < a.sources.size(); ++i) {
    const auto& x = a.sources[i];
    const auto& y = b.sources[i];
    if (x.name != y.name || x.first_sequence != y.first_sequence ||
        x.epoch != y.epoch || x.shard_position != y.shard_position ||
        x.record != y.record || x.announce_from != y.announce_from ||
        !same_double(x.drawn, y.drawn))
      return false;
  }
  for (std::size_t i = 0; i < a.carried.size(); ++i) {
    const auto& x = a.carried[i];
    const auto& y = b.carried[i];
    if (x.source != y.source || x.sequence != y.sequence ||
        x.epoch != y.epoch || x.key != y.key || x.offset != y.offset ||
        x.length != y.length || x.document_tokens != y.document_tokens)
      return false;
  }
  return true;
}

bool same_delta(const checkpoint::delta_record& a,
                const checkpoint::delta_record& b) {
  if (a.step.has_value() != b.step.has_value() ||
      a.weights.has_value() != b.weights.has_value())
    return false;
  if (a.step &&
      (a.step->step != b.step->step ||
       !same_doubles(a.step->drawn, b.step->drawn) ||
       a.step->carried_pieces != b.step->carried_pieces))
    return false;
  if (a.weights && (a.weights->from_step != b.weights->from_step ||
                    !same_doubles(a.weights->weights, b.weights->weights)))
    return false;
  return true;
}

void expect_invalid_input(const overlord::error& e) {
  FUZZ_REQUIRE(e.code() == overlord::errc::invalid_input,
               std::string("unexpected error code: ") + e.what());
}

void decode_payload(const std::string& payload) {
  try {
    const auto snapshot = checkpoint::decode_snapshot(payload, "fuzz");
    const auto again = checkpoint::decode_snapshot(
        checkpoint::encode_snapshot(snapshot), "fuzz re-encoded");
    FUZZ_REQUIRE(same_snapshot(snapshot, again),
                 "a snapshot changed when encoded and decoded again");
  } catch (const overlord::error& e) {
    expect_invalid_input(e);
  }

  try {
    const auto delta = checkpoint::decode_delta(payload, "fuzz");
    const auto again = checkpoint::decode_delta(
        checkpoint::encode_delta(delta), "fuzz re-encoded");
    FUZZ_REQUIRE(same_delta(delta, again),
                 "a delta changed when encoded and decoded again");
  } catch (const overlord::error& e) {
    expect_invalid_input(e);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);

  try {
    const auto log = checkpoint::parse_delta_log(bytes, "fuzz/deltas.log");
    for (const auto& payload : log.payloads)
      decode_payload(payload);
  } catch (const overlord::error& e) {
    expect_invalid_input(e);
  }

  try {
    decode_payload(checkpoint::parse_snapshot_file(bytes, "fuzz/snapshot"));
  } catch (const overlord::error& e) {
    expect_invalid_input(e);
  }

  decode_payload(bytes);
  return 0;
}
