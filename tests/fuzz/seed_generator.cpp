// Writes seed inputs for the batch, checkpoint and indexed_reader fuzz
// targets, made by the code that writes them in a running job: batches
// from transport::build_batch and serialize_batch over tokens of a real
// document, a checkpoint directory from checkpoint_store, and indexed
// datasets from sources::indexed_writer.
//
// Usage: seed_generator OUT_DIR TEXT_FILE
// Writes OUT_DIR/batch/*, OUT_DIR/checkpoint/* and OUT_DIR/indexed_reader/*
// (a 4-byte little-endian .idx size, the .idx, then the .bin, the input
// layout of that target). Needs the GPT-2
// vocabulary ($OVERLORD_GPT2_DIR or $OVERLORD_DATA_DIR/gpt2) to tokenize
// TEXT_FILE.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "checkpoint/records.hpp"
#include "checkpoint/restore.hpp"
#include "checkpoint/store.hpp"
#include "common/error.hpp"
#include "planner/config.hpp"
#include "sources/indexed_dataset.hpp"
#include "sources/tokenizer.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "transport/batch_builder.hpp"
#include "transport/wire.hpp"

namespace fs = std::filesystem;

namespace {

using overlord::planner::piece;
using overlord::planner::rank_plan;

constexpr uint32_t sequence_length = 32;

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out)
    throw overlord::error(overlord::errc::io_error,
                          "cannot write " + path.string());
}

std::string to_string(const flatbuffers::DetachedBuffer& buffer) {
  return std::string(reinterpret_cast<const char*>(buffer.data()),
                     buffer.size());
}

// Two rows for rank 1 of step 3: a whole document, then a long document
// split across the rows, then a short one. The second row ends in padding.
rank_plan make_plan(uint32_t long_tokens) {
  rank_plan plan;
  plan.step = 3;
  plan.rank = 1;
  plan.cost = 1234.5;
  plan.imbalance = 1.07;
  plan.carried_pieces = 1;
  const piece whole{0, 10, 0, "mail-0000.jsonl:1", 0, 8, 8};
  const piece head{1, 4, 2, "moby/chapter-001.txt", 0, 24, long_tokens};
  const piece tail{1, 4, 2, "moby/chapter-001.txt", 24, long_tokens - 24,
                   long_tokens};
  const piece short_one{0, 11, 0, "mail-0000.jsonl:2", 0, 5, 5};
  plan.rows = {{whole, head}, {tail, short_one}};
  return plan;
}

void write_batches(const fs::path& dir, const std::vector<int32_t>& tokens) {
  fs::create_directories(dir);
  const uint32_t long_tokens = 40;
  if (tokens.size() < long_tokens + 1)
    throw overlord::error(overlord::errc::invalid_input,
                          "the text file must give at least 41 tokens");
  const rank_plan plan = make_plan(long_tokens);

  overlord::transport::batch_layout layout;
  layout.sequence_length = sequence_length;
  layout.pad_id = 50256;
  layout.source_names = {"mail", "moby"};
  const auto lookup = [&](size_t row, size_t index) -> const int32_t* {
    const piece& p = plan.rows[row][index];
    // Each piece reads its slice of the document's tokens, plus the next
    // token as the label of its last position.
    return tokens.data() + p.offset;
  };

  write_file(dir / "batch_whole_rows.bin",
             to_string(overlord::transport::build_batch(plan, layout, lookup)));

  layout.cp_size = 2;
  const auto rows = overlord::transport::lay_out_rows(plan, layout, lookup);
  write_file(dir / "batch_context_parallel.bin",
             to_string(overlord::transport::serialize_batch(plan, layout, rows,
                                                            1)));

  write_file(dir / "error_reply.bin",
             overlord::transport::encode_error(
                 static_cast<uint8_t>(overlord::errc::unavailable),
                 "step 3 is not planned yet"));
}

overlord::planner::job_config make_config() {
  overlord::planner::job_config config;
  config.seed = 1234;
  config.sequence_length = sequence_length;
  config.ranks = 2;
  config.rows_per_rank = 2;
  overlord::planner::source_config mail;
  mail.name = "mail";
  mail.format = overlord::planner::source_format::jsonl;
  mail.shards = {"/data/mail/mail-0000.jsonl", "/data/mail/mail-0001.jsonl"};
  mail.weight = 0.6;
  overlord::planner::source_config moby;
  moby.name = "moby";
  moby.shards = {"/data/moby/chapter-001.txt"};
  moby.weight = 0.4;
  config.sources = {mail, moby};
  return config;
}

void write_checkpoint(const fs::path& dir) {
  namespace checkpoint = overlord::checkpoint;
  const fs::path store_dir = dir / "store";
  fs::remove_all(store_dir);

  checkpoint::snapshot_record snapshot;
  snapshot.step = 3;
  snapshot.settings = checkpoint::stream_settings(make_config());
  snapshot.topology = "ranks=2 rows_per_rank=2";
  snapshot.weights = {0.6, 0.4};
  snapshot.total_drawn = 512;
  snapshot.sources = {{"mail", 9, 0, 0, 9, 12, 300},
                      {"moby", 3, 2, 0, 0, 5, 212}};
  snapshot.carried = {make_plan(40).rows[1][0]};

  checkpoint::delta_record step;
  step.step = checkpoint::step_delta{3, {96, 32}, 1};
  checkpoint::delta_record weights;
  weights.weights = checkpoint::weight_change{4, {0.5, 0.5}};

  {
    checkpoint::checkpoint_store store(store_dir.string());
    store.write_snapshot(snapshot.step, checkpoint::encode_snapshot(snapshot));
    store.append_delta(checkpoint::encode_delta(step));
    store.append_delta(checkpoint::encode_delta(weights));
  }

  fs::create_directories(dir);
  write_file(dir / "snapshot_payload.bin",
             checkpoint::encode_snapshot(snapshot));
  write_file(dir / "step_delta_payload.bin", checkpoint::encode_delta(step));
  write_file(dir / "weight_change_payload.bin",
             checkpoint::encode_delta(weights));
  for (const auto& entry : fs::directory_iterator(store_dir)) {
    const auto name = entry.path().filename().string();
    fs::copy_file(entry.path(),
                  dir / (name == "deltas.log" ? "delta_log.bin"
                                              : "snapshot_file.bin"),
                  fs::copy_options::overwrite_existing);
  }
  fs::remove_all(store_dir);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

// Writes three documents cut from `tokens`, each ending with the EOS id,
// as a dataset of `dtype`, and stores it in the target's input layout.
void write_indexed(const fs::path& dir, const std::vector<int32_t>& tokens,
                   overlord::sources::token_dtype dtype,
                   const std::string& name) {
  fs::create_directories(dir);
  const fs::path prefix = dir / ("dataset-" + name);
  {
    overlord::sources::indexed_writer writer(prefix.string(), dtype);
    const size_t cuts[] = {0, 7, 19, 40};
    for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
      std::vector<int32_t> document(tokens.begin() + cuts[i],
                                    tokens.begin() + cuts[i + 1]);
      document.push_back(50256);
      writer.add_document(document);
    }
    writer.finish();
  }
  const std::string idx = read_file(prefix.string() + ".idx");
  const std::string bin = read_file(prefix.string() + ".bin");
  std::string input;
  for (int shift = 0; shift < 32; shift += 8)
    input.push_back(static_cast<char>((idx.size() >> shift) & 0xff));
  write_file(dir / (name + "_dataset.bin"), input + idx + bin);
  fs::remove(prefix.string() + ".idx");
  fs::remove(prefix.string() + ".bin");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR TEXT_FILE\n", argv[0]);
    return 2;
  }
  try {
    std::ifstream in(argv[2], std::ios::binary);
    if (!in)
      throw overlord::error(overlord::errc::not_found,
                            std::string("cannot read ") + argv[2]);
    const std::string text((std::istreambuf_iterator<char>(in)),
                           std::istreambuf_iterator<char>());
    const auto tokenizer = overlord::sources::gpt2_tokenizer::load(
        overlord::fuzzing::gpt2_directory());

    const fs::path out = argv[1];
    write_batches(out / "batch", tokenizer->encode(text));
    write_checkpoint(out / "checkpoint");
    const auto tokens = tokenizer->encode(text);
    write_indexed(out / "indexed_reader", tokens,
                  overlord::sources::token_dtype::uint16, "uint16");
    write_indexed(out / "indexed_reader", tokens,
                  overlord::sources::token_dtype::int32, "int32");
    return 0;
  } catch (const overlord::error& e) {
    std::fprintf(stderr, "seed_generator: %s\n", e.what());
    return 1;
  }
}
