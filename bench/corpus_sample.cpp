#include "bench/corpus_sample.hpp"

#include <algorithm>
#include <filesystem>

#include "common/error.hpp"
#include "sources/reader.hpp"

namespace fs = std::filesystem;

namespace overlord::bench {

namespace {

std::vector<std::string> sorted_files(const fs::path& folder,
                                      const std::string& extension) {
  std::vector<std::string> files;
  if (!fs::is_directory(folder))
    throw error(errc::not_found, folder.string() +
                                     " not found; run scripts/fetch-demo-data");
  for (const auto& entry : fs::directory_iterator(folder))
    if (entry.path().extension() == extension)
      files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::vector<std::string> load_corpus_sample(const std::string& data_dir) {
  std::vector<std::string> documents;
  sources::reader_options text;
  sources::reader_options jsonl;
  jsonl.format = sources::shard_format::jsonl;

  auto add = [&](const std::string& path, const sources::reader_options& options) {
    auto result = sources::read_shard(path, path, options);
    for (auto& doc : result.documents)
      documents.push_back(std::move(doc.text));
  };
  for (const auto& path : sorted_files(fs::path(data_dir) / "moby", ".txt"))
    add(path, text);
  for (const auto& path : sorted_files(fs::path(data_dir) / "sotu", ".txt"))
    add(path, text);
  auto mail = sorted_files(fs::path(data_dir) / "mail", ".jsonl");
  for (size_t i = 0; i < mail.size() && i < 10; ++i)
    add(mail[i], jsonl);
  return documents;
}

}  // namespace overlord::bench
