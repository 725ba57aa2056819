// Single-core read throughput of an indexed source against the JSON Lines
// source it was converted from. The bench reads and tokenizes every demo
// mail shard as a source worker does. It then writes the same documents
// with indexed_writer and reads them back from the memory-mapped dataset
// in ranges of 1024 documents, as a worker reads them.
//
// usage: indexed_bench DATA_DIR WORK_DIR
// Prints figures, then one JSON line.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "sources/indexed_dataset.hpp"
#include "sources/reader.hpp"
#include "sources/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
namespace sources = overlord::sources;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

std::vector<std::string> mail_shards(const std::string& data_dir) {
  std::vector<std::string> shards;
  for (const auto& entry : fs::directory_iterator(data_dir + "/mail"))
    if (entry.path().extension() == ".jsonl")
      shards.push_back(entry.path().string());
  std::sort(shards.begin(), shards.end());
  return shards;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: indexed_bench DATA_DIR WORK_DIR\n";
    return 2;
  }
  try {
    const std::string data_dir = argv[1];
    const std::string prefix = std::string(argv[2]) + "/mail";
    auto tokenizer = sources::gpt2_tokenizer::load(data_dir + "/gpt2");
    auto shards = mail_shards(data_dir);

    // JSON Lines: read, parse and tokenize every shard.
    sources::reader_options options;
    options.format = sources::shard_format::jsonl;
    std::vector<std::vector<int32_t>> documents;
    sources::gpt2_piece_cache cache;
    auto start = clock_type::now();
    for (const auto& shard : shards) {
      auto read = sources::read_shard(shard, shard, options);
      for (const auto& document : read.documents) {
        documents.push_back(tokenizer->encode(document.text, cache));
        documents.back().push_back(tokenizer->eos_id());
      }
    }
    const double jsonl_seconds = seconds_since(start);
    uint64_t tokens = 0;
    for (const auto& document : documents)
      tokens += document.size();

    sources::indexed_writer writer(prefix, sources::token_dtype::uint16);
    for (auto document : documents) {
      document.pop_back();
      writer.add_document(document);
    }
    writer.finish();

    // Indexed: best of three passes over the mapped files.
    sources::indexed_read_options indexed_options;
    indexed_options.vocab_size = tokenizer->vocab_size();
    indexed_options.eos_id = tokenizer->eos_id();
    double indexed_seconds = 1e30;
    uint64_t indexed_tokens = 0;
    uint64_t indexed_documents = 0;
    for (int pass = 0; pass < 3; ++pass) {
      indexed_tokens = 0;
      indexed_documents = 0;
      start = clock_type::now();
      auto dataset = sources::indexed_dataset::open(prefix);
      for (uint64_t first = 0; first < dataset->document_count();
           first += 1024) {
        auto read = sources::read_indexed_documents(*dataset, "mail", first,
                                                    1024, indexed_options);
        for (const auto& document : read.documents)
          indexed_tokens += document.tokens.size();
        indexed_documents += read.documents.size();
      }
      indexed_seconds = std::min(indexed_seconds, seconds_since(start));
    }
    if (indexed_tokens != tokens || indexed_documents != documents.size()) {
      std::cerr << "indexed_bench: the indexed read returned "
                << indexed_documents << " documents and " << indexed_tokens
                << " tokens, the JSON Lines read " << documents.size()
                << " and " << tokens << "\n";
      return 1;
    }

    const double count = static_cast<double>(documents.size());
    std::cout << "documents " << documents.size() << ", tokens " << tokens
              << "\njsonl (read + tokenize): " << jsonl_seconds << " s, "
              << count / jsonl_seconds << " documents/s\nindexed (mmap read): "
              << indexed_seconds << " s, " << count / indexed_seconds
              << " documents/s\n";
    std::cout << "{\"bench\":\"indexed\",\"documents\":" << documents.size()
              << ",\"tokens\":" << tokens
              << ",\"jsonl_documents_per_s\":"
              << static_cast<uint64_t>(count / jsonl_seconds)
              << ",\"indexed_documents_per_s\":"
              << static_cast<uint64_t>(count / indexed_seconds)
              << ",\"jsonl_tokens_per_s\":"
              << static_cast<uint64_t>(tokens / jsonl_seconds)
              << ",\"indexed_tokens_per_s\":"
              << static_cast<uint64_t>(tokens / indexed_seconds)
              << ",\"speedup\":"
              << static_cast<double>(static_cast<int>(
                     jsonl_seconds / indexed_seconds * 10)) / 10
              << "}\n";
  } catch (const overlord::error& e) {
    std::cerr << "indexed_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
