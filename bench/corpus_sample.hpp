// The benchmark text sample: every Moby-Dick chapter and State of the Union
// speech plus the mails of the first ten mail shards, read the same way
// the loader reads them (JSON Lines text fields, whole text files).
#pragma once

#include <string>
#include <vector>

namespace overlord::bench {

// Returns the documents of the sample under `data_dir` (the demo data
// folder). Throws overlord::error when a file cannot be read.
std::vector<std::string> load_corpus_sample(const std::string& data_dir);

}  // namespace overlord::bench
