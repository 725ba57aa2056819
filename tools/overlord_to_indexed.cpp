// overlord_to_indexed: converts one source of a job config into a
// pre-tokenized dataset in Megatron-LM's indexed layout (PREFIX.bin and
// PREFIX.idx), read by sources of `format: indexed`.
//
//   overlord_to_indexed --config CFG --source NAME --output PREFIX
//                       [--dtype uint16|int32] [--append-eos]
//
// Documents are read the way overlordd reads them (same reader, same
// bad-input policy, same tokenizer) from the source's shards in sorted
// path order, records in file order, and written one sequence per
// document. Without --append-eos the documents are written without EOS,
// which matches the default `append_eos: true` of an indexed source.

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "planner/config.hpp"
#include "sources/indexed_dataset.hpp"
#include "sources/reader.hpp"
#include "sources/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
using overlord::errc;
using overlord::error;
namespace planner = overlord::planner;
namespace sources = overlord::sources;

constexpr const char* usage_text =
    "usage: overlord_to_indexed --config CFG --source NAME --output PREFIX\n"
    "                           [--dtype uint16|int32] [--append-eos]\n"
    "\n"
    "Tokenizes every document of source NAME in job config CFG and writes\n"
    "PREFIX.bin and PREFIX.idx in Megatron-LM's indexed layout.\n"
    "\n"
    "  --config CFG     job config (YAML) that defines the source and the\n"
    "                   tokenizer\n"
    "  --source NAME    the source to convert (jsonl, text or indexed)\n"
    "  --output PREFIX  path prefix of the two output files\n"
    "  --dtype TYPE     integer type of a token id in PREFIX.bin: uint16 or\n"
    "                   int32; default uint16 when the vocabulary has fewer\n"
    "                   than 65,500 ids, otherwise int32\n"
    "  --append-eos     end every written document with the EOS id; read\n"
    "                   such a dataset with append_eos: false\n"
    "  --help           print this help\n"
    "\n"
    "Prints one JSON line with the counts when done. Exits 2 on a bad\n"
    "command line or config and 1 when reading or writing fails.\n";

// Bad records are reported one by one up to this count, then once per
// this many.
constexpr uint64_t skip_report_burst = 20;
constexpr uint64_t skip_report_every = 1000;

constexpr uint64_t indexed_documents_per_read = 4096;

struct options {
  std::string config;
  std::string source;
  std::string output;
  std::string dtype;
  bool append_eos = false;
};

struct usage_error {
  std::string message;
};

options parse_options(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--help" || argument == "-h") {
      std::cout << usage_text;
      std::exit(0);
    }
    if (argument == "--append-eos") {
      parsed.append_eos = true;
      continue;
    }
    if (i + 1 >= argc)
      throw usage_error{argument == "--config" || argument == "--source" ||
                                argument == "--output" || argument == "--dtype"
                            ? argument + " needs a value"
                            : "unknown option " + argument};
    const std::string value = argv[++i];
    if (argument == "--config")
      parsed.config = value;
    else if (argument == "--source")
      parsed.source = value;
    else if (argument == "--output")
      parsed.output = value;
    else if (argument == "--dtype")
      parsed.dtype = value;
    else
      throw usage_error{"unknown option " + argument};
  }
  if (parsed.config.empty() || parsed.source.empty() || parsed.output.empty())
    throw usage_error{"--config, --source and --output are required"};
  if (!parsed.dtype.empty() && parsed.dtype != "uint16" &&
      parsed.dtype != "int32")
    throw usage_error{"--dtype " + parsed.dtype + ": use uint16 or int32"};
  return parsed;
}

// Converts one source; counts what it wrote and skipped.
class converter {
 public:
  converter(const planner::job_config& config,
            const planner::source_config& source,
            std::shared_ptr<const sources::gpt2_tokenizer> tokenizer,
            sources::indexed_writer& writer, bool append_eos)
      : config_(config),
        source_(source),
        tokenizer_(std::move(tokenizer)),
        writer_(writer),
        append_eos_(append_eos) {}

  void convert() {
    for (const auto& shard : source_.shards) {
      if (source_.format == planner::source_format::indexed)
        convert_indexed(shard);
      else
        convert_text(shard);
    }
  }

  uint64_t skipped() const { return skipped_; }

 private:
  bool fail_on_bad_input() const {
    return config_.on_bad_input == planner::bad_input_policy::fail;
  }

  void report(const std::vector<sources::bad_record>& records) {
    for (const auto& record : records) {
      ++skipped_;
      if (skipped_ <= skip_report_burst || skipped_ % skip_report_every == 0)
        std::cerr << "overlord_to_indexed: source=" << source_.name
                  << " skipped " << record.kind << " " << record.where << ": "
                  << record.detail << " (skipped so far: " << skipped_
                  << ")\n";
    }
  }

  void write(std::vector<int32_t>& tokens) {
    if (append_eos_)
      tokens.push_back(tokenizer_->eos_id());
    writer_.add_document(tokens);
  }

  void convert_text(const std::string& shard) {
    sources::reader_options options;
    options.format = source_.format == planner::source_format::jsonl
                         ? sources::shard_format::jsonl
                         : sources::shard_format::text;
    options.text_field = source_.text_field;
    options.fail_on_bad_input = fail_on_bad_input();
    options.max_document_bytes =
        static_cast<uint64_t>(config_.max_document_bytes);
    auto read = sources::read_shard(shard, fs::path(shard).filename().string(),
                                    options);
    report(read.skipped);
    for (const auto& document : read.documents) {
      auto tokens = tokenizer_->encode(document.text, cache_);
      write(tokens);
    }
  }

  // Copies the documents of an indexed dataset, for example to change the
  // dtype. They are read with EOS appended or required, per the source's
  // append_eos, and written without it unless --append-eos is given.
  void convert_indexed(const std::string& prefix) {
    auto dataset = sources::indexed_dataset::open(prefix);
    sources::indexed_read_options options;
    options.fail_on_bad_input = fail_on_bad_input();
    options.max_document_bytes =
        static_cast<uint64_t>(config_.max_document_bytes);
    options.vocab_size = tokenizer_->vocab_size();
    options.eos_id = tokenizer_->eos_id();
    options.append_eos = source_.append_eos;
    const auto name = fs::path(prefix).filename().string();
    for (uint64_t first = 0; first < dataset->document_count();
         first += indexed_documents_per_read) {
      auto read = sources::read_indexed_documents(
          *dataset, name, first, indexed_documents_per_read, options);
      report(read.skipped);
      for (auto& document : read.documents) {
        document.tokens.pop_back();
        write(document.tokens);
      }
    }
  }

  const planner::job_config& config_;
  const planner::source_config& source_;
  std::shared_ptr<const sources::gpt2_tokenizer> tokenizer_;
  sources::indexed_writer& writer_;
  bool append_eos_;
  sources::gpt2_piece_cache cache_;
  uint64_t skipped_ = 0;
};

int run(const options& opts) {
  planner::job_config config;
  try {
    config = planner::load_config(opts.config);
  } catch (const error& e) {
    std::cerr << "overlord_to_indexed: " << e.what() << "\n";
    return 2;
  }
  const planner::source_config* source = nullptr;
  for (const auto& candidate : config.sources)
    if (candidate.name == opts.source)
      source = &candidate;
  if (source == nullptr) {
    std::string names;
    for (const auto& candidate : config.sources)
      names += (names.empty() ? "" : ", ") + candidate.name;
    std::cerr << "overlord_to_indexed: " << opts.config
              << " has no source named '" << opts.source
              << "'; its sources are " << names << "\n";
    return 2;
  }

  // The indexed layout contains token ids only, so image-text samples have
  // no place in it.
  if (source->format == planner::source_format::webdataset) {
    std::cerr << "overlord_to_indexed: source '" << source->name
              << "' is an image-text (webdataset) source; only jsonl, text "
                 "and indexed sources can be converted, because the "
                 "indexed layout contains token ids only\n";
    return 2;
  }

  auto tokenizer = sources::gpt2_tokenizer::load(config.tokenizer);
  auto dtype = opts.dtype.empty()
                   ? sources::dtype_for_vocabulary(tokenizer->vocab_size())
               : opts.dtype == "uint16" ? sources::token_dtype::uint16
                                        : sources::token_dtype::int32;
  auto parent = fs::path(opts.output).parent_path();
  if (!parent.empty())
    fs::create_directories(parent);

  sources::indexed_writer writer(opts.output, dtype);
  converter convert(config, *source, tokenizer, writer, opts.append_eos);
  convert.convert();
  writer.finish();

  rapidjson::StringBuffer text;
  rapidjson::Writer<rapidjson::StringBuffer> json(text);
  json.StartObject();
  json.Key("output");
  json.String(opts.output.c_str());
  json.Key("source");
  json.String(source->name.c_str());
  json.Key("dtype");
  json.String(sources::to_string(dtype));
  json.Key("documents");
  json.Uint64(writer.documents());
  json.Key("tokens");
  json.Uint64(writer.tokens());
  json.Key("skipped");
  json.Uint64(convert.skipped());
  json.EndObject();
  std::cout << text.GetString() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  try {
    opts = parse_options(argc, argv);
  } catch (const usage_error& e) {
    std::cerr << "overlord_to_indexed: " << e.message << "\n\n" << usage_text;
    return 2;
  }
  try {
    return run(opts);
  } catch (const error& e) {
    std::cerr << "overlord_to_indexed: " << e.what() << "\n";
    return e.code() == errc::invalid_config ? 2 : 1;
  } catch (const std::exception& e) {
    std::cerr << "overlord_to_indexed: " << e.what() << "\n";
    return 1;
  }
}
