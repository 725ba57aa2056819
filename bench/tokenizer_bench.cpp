// Single-core tokenizer throughput on the demo corpus sample, plus the
// time of a 1 MB document without spaces against 1 MB of prose.
//
// usage: tokenizer_bench DATA_DIR
// Prints figures, then one JSON line.

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>

#include "bench/corpus_sample.hpp"
#include "common/error.hpp"
#include "sources/tokenizer.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Times one call of `encode` on `text`, best of `repeats`.
double best_time(const overlord::sources::gpt2_tokenizer& tokenizer,
                 const std::string& text, int repeats) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    overlord::sources::gpt2_piece_cache cache;
    auto start = clock_type::now();
    auto ids = tokenizer.encode(text, cache);
    best = std::min(best, seconds_since(start));
    if (ids.empty())
      std::abort();
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: tokenizer_bench DATA_DIR\n";
    return 2;
  }
  try {
    std::string data_dir = argv[1];
    auto tokenizer =
        overlord::sources::gpt2_tokenizer::load(data_dir + "/gpt2");
    auto documents = overlord::bench::load_corpus_sample(data_dir);

    uint64_t bytes = 0;
    for (const auto& doc : documents)
      bytes += doc.size();

    // One cache for the whole run, as a source worker keeps one.
    overlord::sources::gpt2_piece_cache cache;
    uint64_t tokens = 0;
    auto start = clock_type::now();
    for (const auto& doc : documents)
      tokens += tokenizer->encode(doc, cache).size();
    double corpus_seconds = seconds_since(start);
    double mb_per_s = bytes / 1e6 / corpus_seconds;

    // 1 MB of prose: the start of the sample. 1 MB without spaces: random
    // lowercase letters, which BPE cannot merge into few long tokens.
    std::string prose;
    for (const auto& doc : documents) {
      prose += doc;
      if (prose.size() >= 1000000)
        break;
    }
    prose.resize(1000000);
    std::mt19937_64 random(7);
    std::string no_spaces(1000000, 'a');
    for (auto& c : no_spaces)
      c = static_cast<char>('a' + random() % 26);
    double prose_seconds = best_time(*tokenizer, prose, 3);
    double no_space_seconds = best_time(*tokenizer, no_spaces, 3);

    std::printf("documents %zu, bytes %llu, tokens %llu\n", documents.size(),
                static_cast<unsigned long long>(bytes),
                static_cast<unsigned long long>(tokens));
    std::printf("overlord tokenizer: %.3f s, %.2f MB/s, %.0f tokens/s (one core)\n",
                corpus_seconds, mb_per_s, tokens / corpus_seconds);
    std::printf("1 MB prose %.3f s, 1 MB without spaces %.3f s, ratio %.2f\n",
                prose_seconds, no_space_seconds,
                no_space_seconds / prose_seconds);
    std::printf(
        "{\"bench\":\"tokenizer_core\",\"documents\":%zu,\"bytes\":%llu,"
        "\"tokens\":%llu,\"seconds\":%.4f,\"mb_per_s\":%.3f,"
        "\"tokens_per_s\":%.0f,\"prose_1mb_s\":%.4f,\"no_space_1mb_s\":%.4f,"
        "\"no_space_ratio\":%.3f}\n",
        documents.size(), static_cast<unsigned long long>(bytes),
        static_cast<unsigned long long>(tokens), corpus_seconds, mb_per_s,
        tokens / corpus_seconds, prose_seconds, no_space_seconds,
        no_space_seconds / prose_seconds);
    return 0;
  } catch (const overlord::error& e) {
    std::cerr << "tokenizer_bench: " << e.what() << "\n";
    return 1;
  }
}
