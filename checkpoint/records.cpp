#include "checkpoint/records.hpp"

#include <cstring>

#include "checkpoint/checkpoint_generated.h"
#include "common/error.hpp"

namespace overlord::checkpoint {

namespace fb = flatbuffers;

namespace {

// Copies a vector of 8-byte values (doubles, uint64) out of a verified
// buffer. The FlatBuffers verifier (2.0.8) checks only the 4-byte alignment
// of a vector's length, so a damaged record can place the values at an
// address that is not 8-aligned, where reading them in place is undefined
// behaviour.
template <class T>
std::vector<T> read_eight_byte_values(const fb::Vector<T>* values) {
  static_assert(sizeof(T) == 8, "for 8-byte scalars");
  std::vector<T> out(values != nullptr ? values->size() : 0);
  if (!out.empty())
    std::memcpy(out.data(), values->Data(), out.size() * sizeof(T));
  for (T& value : out)
    value = fb::EndianScalar(value);
  return out;
}

std::vector<double> read_doubles(const fb::Vector<double>* values) {
  return read_eight_byte_values(values);
}

}  // namespace

std::string encode_snapshot(const snapshot_record& record) {
  // Strings go in with their length (CreateString(std::string)), not as C
  // strings, so a value that holds a NUL byte is stored whole. The order
  // of the Create calls fixes the byte layout; keep it.
  fb::FlatBufferBuilder builder(1024);
  std::vector<fb::Offset<wire::StreamSetting>> settings;
  for (const auto& [key, value] : record.settings) {
    auto key_offset = builder.CreateString(key);
    auto value_offset = builder.CreateString(value);
    settings.push_back(
        wire::CreateStreamSetting(builder, key_offset, value_offset));
  }
  std::vector<fb::Offset<wire::SourceCursor>> sources;
  for (const auto& s : record.sources)
    sources.push_back(wire::CreateSourceCursor(
        builder, builder.CreateString(s.name), s.first_sequence, s.epoch,
        s.shard_position, s.record, s.announce_from, s.drawn));
  std::vector<fb::Offset<wire::CarriedPiece>> carried;
  for (const auto& p : record.carried)
    carried.push_back(wire::CreateCarriedPiece(
        builder, p.source, p.sequence, p.epoch, builder.CreateString(p.key),
        p.offset, p.length, p.document_tokens, p.patches, p.atomic));
  auto settings_offset = builder.CreateVector(settings);
  auto topology_offset = builder.CreateString(record.topology);
  auto weights_offset = builder.CreateVector(record.weights);
  auto sources_offset = builder.CreateVector(sources);
  auto carried_offset = builder.CreateVector(carried);
  auto mixture_offset = builder.CreateVector(record.mixture_weights);
  auto from_steps_offset = builder.CreateVector(record.weights_from_steps);
  auto root = wire::CreateSnapshot(
      builder, snapshot_format_version, record.step, settings_offset,
      topology_offset, weights_offset, record.total_drawn, sources_offset,
      carried_offset, record.weights_from_step, mixture_offset,
      from_steps_offset);
  builder.Finish(root);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                     builder.GetSize());
}

snapshot_record decode_snapshot(const std::string& bytes,
                                const std::string& origin) {
  fb::Verifier verifier(reinterpret_cast<const uint8_t*>(bytes.data()),
                        bytes.size());
  if (!verifier.VerifyBuffer<wire::Snapshot>(nullptr))
    throw error(errc::invalid_input,
                origin + ": not a valid snapshot record; the file is damaged");
  auto* root = fb::GetRoot<wire::Snapshot>(bytes.data());
  if (root->format_version() < oldest_snapshot_format_version ||
      root->format_version() > snapshot_format_version)
    throw error(errc::invalid_input,
                origin + ": snapshot format version " +
                    std::to_string(root->format_version()) +
                    " is not supported (this build reads versions " +
                    std::to_string(oldest_snapshot_format_version) + " to " +
                    std::to_string(snapshot_format_version) + ")");
  snapshot_record record;
  record.step = root->step();
  if (root->settings())
    for (const auto* setting : *root->settings())
      record.settings.emplace_back(
          setting->key() ? setting->key()->str() : "",
          setting->value() ? setting->value()->str() : "");
  if (root->topology())
    record.topology = root->topology()->str();
  record.weights = read_doubles(root->weights());
  record.weights_from_step = root->weights_from_step();
  record.weights_from_steps = read_eight_byte_values(root->weights_from_steps());
  record.mixture_weights = read_doubles(root->mixture_weights());
  record.total_drawn = root->total_drawn();
  if (root->sources())
    for (const auto* s : *root->sources()) {
      source_cursor cursor;
      cursor.name = s->name() ? s->name()->str() : "";
      cursor.first_sequence = s->first_sequence();
      cursor.epoch = s->epoch();
      cursor.shard_position = s->shard_position();
      cursor.record = s->record();
      cursor.announce_from = s->announce_from();
      cursor.drawn = s->drawn();
      record.sources.push_back(std::move(cursor));
    }
  if (root->carried())
    for (const auto* c : *root->carried()) {
      planner::piece p;
      p.source = c->source();
      p.sequence = c->sequence();
      p.epoch = c->epoch();
      p.key = c->key() ? c->key()->str() : "";
      p.offset = c->offset();
      p.length = c->length();
      p.document_tokens = c->document_tokens();
      p.patches = c->patches();
      p.atomic = c->atomic();
      record.carried.push_back(std::move(p));
    }
  return record;
}

std::string encode_delta(const delta_record& record) {
  fb::FlatBufferBuilder builder(128);
  fb::Offset<wire::Delta> root;
  if (record.step) {
    auto body = wire::CreateStepDeltaDirect(builder, record.step->step,
                                            &record.step->drawn,
                                            record.step->carried_pieces);
    root = wire::CreateDelta(builder, wire::DeltaBody::StepDelta, body.Union());
  } else {
    const auto& change = *record.weights;
    const std::vector<uint8_t> named(change.named.begin(), change.named.end());
    auto weights_offset = builder.CreateVector(change.weights);
    auto named_offset = builder.CreateVector(named);
    auto body = wire::CreateWeightChange(builder, change.from_step,
                                         weights_offset, named_offset);
    root =
        wire::CreateDelta(builder, wire::DeltaBody::WeightChange, body.Union());
  }
  builder.Finish(root);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                     builder.GetSize());
}

delta_record decode_delta(const std::string& bytes, const std::string& origin) {
  fb::Verifier verifier(reinterpret_cast<const uint8_t*>(bytes.data()),
                        bytes.size());
  if (!verifier.VerifyBuffer<wire::Delta>(nullptr))
    throw error(errc::invalid_input,
                origin + ": not a valid delta record; the log is damaged");
  auto* root = fb::GetRoot<wire::Delta>(bytes.data());
  delta_record record;
  if (auto* step = root->body_as_StepDelta()) {
    step_delta delta;
    delta.step = step->step();
    delta.drawn = read_doubles(step->drawn());
    delta.carried_pieces = step->carried_pieces();
    record.step = std::move(delta);
  } else if (auto* change = root->body_as_WeightChange()) {
    weight_change weights;
    weights.from_step = change->from_step();
    weights.weights = read_doubles(change->weights());
    if (change->named())
      for (const auto flag : *change->named())
        weights.named.push_back(flag != 0);
    record.weights = std::move(weights);
  } else {
    throw error(errc::invalid_input, origin + ": delta record of unknown kind");
  }
  return record;
}

}  // namespace overlord::checkpoint
