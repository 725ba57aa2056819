#include "actors/source_pool.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <tuple>
#include <unordered_map>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "actors/messages.hpp"
#include "actors/read_dispatch.hpp"
#include "common/error.hpp"
#include "common/job_metrics.hpp"
#include "common/log.hpp"
#include "planner/rng.hpp"
#include "sources/indexed_dataset.hpp"
#include "sources/reader.hpp"
#include "sources/webdataset.hpp"
#include "transport/payload_wire.hpp"

namespace fs = std::filesystem;

namespace overlord::actors {

namespace {

// Skipped records are logged one by one up to this count per worker, then
// once per this many.
constexpr uint64_t skip_log_burst = 20;
constexpr uint64_t skip_log_every = 1000;

// Documents per read of an indexed dataset, so that one huge dataset is
// read in bounded pieces spread over the workers. The stream does not
// depend on it: ranges are released in order and record numbers count
// from the start of the dataset.
constexpr uint64_t indexed_documents_per_read = 1024;

struct worker_state {
  static inline const char* name = "source_worker";
  uint64_t skipped = 0;
  uint64_t truncated = 0;
  sources::gpt2_piece_cache cache;
  // The indexed dataset read last, kept mapped for the next range.
  std::shared_ptr<const sources::indexed_dataset> dataset;
  // Tar headers of the WebDataset shards read last, for their next ranges.
  std::shared_ptr<sources::tar_index_cache> tar_indexes =
      std::make_shared<sources::tar_index_cache>();
};

// Reads part `part` of an indexed dataset: token ids as stored, without
// tokenizing.
sources::read_result read_indexed_part(
    caf::stateful_actor<worker_state>* self, const pool_setup& setup,
    const std::string& prefix, const std::string& name, uint32_t part,
    std::vector<tokenized_document>& documents) {
  const auto& source = setup.config.sources[setup.source];
  const bool fail = setup.config.on_bad_input == planner::bad_input_policy::fail;
  sources::read_result skipped;
  auto& dataset = self->state.dataset;
  if (!dataset || dataset->prefix() != prefix) {
    dataset.reset();
    try {
      dataset = sources::indexed_dataset::open(prefix);
    } catch (const error& e) {
      if (fail)
        throw error(errc::invalid_input,
                    std::string(e.what()) +
                        " (on_bad_input is fail; fix the data or set "
                        "on_bad_input: skip)");
      skipped.skipped.push_back({"unreadable_file", name, e.what()});
      return skipped;
    }
  }

  sources::indexed_read_options options;
  options.fail_on_bad_input = fail;
  options.max_document_bytes =
      static_cast<uint64_t>(setup.config.max_document_bytes);
  options.vocab_size = setup.tokenizer->vocab_size();
  options.eos_id = setup.tokenizer->eos_id();
  options.append_eos = source.append_eos;
  auto read = sources::read_indexed_documents(
      *dataset, name, uint64_t{part} * indexed_documents_per_read,
      indexed_documents_per_read, options);
  for (auto& doc : read.documents) {
    tokenized_document out;
    out.key = std::move(doc.key);
    out.tokens = std::move(doc.tokens);
    documents.push_back(std::move(out));
  }
  skipped.skipped = std::move(read.skipped);
  return skipped;
}

// Returns the size of the byte ranges `source`'s shards are read in, or 0
// when they are read whole: JSON Lines shards in ranges of
// `read_range_bytes`, WebDataset shards in ranges of
// `image_read_range_bytes`, unless quarantine must see a shard whole.
uint64_t range_bytes(const planner::job_config& config,
                     const planner::source_config& source) {
  if (config.on_bad_input == planner::bad_input_policy::quarantine)
    return 0;
  if (source.format == planner::source_format::jsonl)
    return static_cast<uint64_t>(config.read_range_bytes);
  if (source.format == planner::source_format::webdataset)
    return static_cast<uint64_t>(config.image_read_range_bytes);
  return 0;
}

// Every range of a WebDataset shard walks all of the shard's tar entries,
// so a shard is cut into at most this many ranges. A worker's first range
// of a shard reads the headers, and later ones take them from its cache.
constexpr uint64_t max_tar_ranges = 64;

// The reads of one shard: `count` ranges of `size` bytes (the last one
// open-ended for tar shards), or one whole read when count is 1.
struct range_plan {
  uint64_t count = 1;
  uint64_t size = 0;
};

// Returns the ranges shard `shard` is read in. A compressed tar shard is
// read whole: its header offsets count uncompressed bytes, and every range
// would decompress it all.
// NOTE: the plan follows the file's size when asked, so a shard that
// grows or shrinks during the job changes its ranges.
range_plan plan_ranges(const planner::job_config& config,
                       const planner::source_config& source, uint32_t shard) {
  range_plan plan;
  uint64_t range = range_bytes(config, source);
  if (range == 0)
    return plan;
  const bool tar = source.format == planner::source_format::webdataset;
  if (tar && sources::compressed_shard(source.shards[shard]))
    return plan;
  std::error_code ec;
  auto size = fs::file_size(source.shards[shard], ec);
  if (ec || size <= range)
    return plan;
  if (tar)
    range = std::max(range, (size + max_tar_ranges - 1) / max_tar_ranges);
  plan.count = (size + range - 1) / range;
  plan.size = range;
  return plan;
}

// Returns how many byte ranges shard `shard` is read in (1: whole).
uint64_t byte_ranges(const planner::job_config& config,
                     const planner::source_config& source, uint32_t shard) {
  return plan_ranges(config, source, shard).count;
}

// Returns how many reads shard `shard` takes: the ranges of an indexed
// dataset or the byte ranges of a large JSON Lines or WebDataset shard, or
// 1. An indexed dataset that does not open takes one read, whose worker
// reports the problem.
uint32_t reads_per_shard(const planner::job_config& config,
                         const planner::source_config& source,
                         uint32_t shard) {
  if (source.format == planner::source_format::jsonl ||
      source.format == planner::source_format::webdataset)
    return static_cast<uint32_t>(std::min<uint64_t>(
        byte_ranges(config, source, shard), UINT32_MAX));
  if (source.format != planner::source_format::indexed)
    return 1;
  try {
    auto dataset = sources::indexed_dataset::open(source.shards[shard]);
    auto parts = (dataset->document_count() + indexed_documents_per_read - 1) /
                 indexed_documents_per_read;
    return static_cast<uint32_t>(std::max<uint64_t>(parts, 1));
  } catch (const error&) {
    return 1;
  }
}

// Returns true when decoding `text` replaces invalid UTF-8 with U+FFFD.
bool has_invalid_utf8(const std::string& text) {
  bool ascii = std::all_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x80;
  });
  if (ascii)
    return false;
  std::size_t replacements = 0;
  sources::decode_utf8_lossy(text, &replacements);
  return replacements > 0;
}

using worker_actor = caf::stateful_actor<worker_state>;

// Returns the bad-input kinds a source's reads can report, so that their
// counters exist at 0 from the pool's start. Keep in step with the readers.
std::vector<std::string> bad_input_kinds(const planner::job_config& config,
                                         const planner::source_config& source) {
  std::vector<std::string> kinds;
  switch (source.format) {
    case planner::source_format::jsonl:
      kinds = {"malformed_json", "missing_field", "unreadable_file",
               "oversize",       "empty",         "invalid_utf8"};
      break;
    case planner::source_format::text:
      kinds = {"unreadable_file", "oversize", "empty", "invalid_utf8"};
      break;
    case planner::source_format::indexed:
      kinds = {"bad_document", "missing_eos", "oversize", "empty",
               "unreadable_file"};
      break;
    case planner::source_format::webdataset:
      kinds = {"missing_member", "split_sample", "duplicate_member",
               "truncated_tar",  "corrupt_tar",  "bad_caption",
               "bad_image",      "oversize",     "unreadable_file"};
      break;
  }
  if (config.on_bad_input == planner::bad_input_policy::quarantine &&
      source.format != planner::source_format::indexed)
    kinds.push_back("quarantined");
  return kinds;
}

// Reads one text shard (jsonl or text) into `out`. Under quarantine, a
// shard with any bad record contributes no document at all.
void load_text_shard(const pool_setup& setup, const sources::reader_options& options,
                     const std::string& path, const std::string& shard_name,
                     sources::read_result& read) {
  read = sources::read_shard(path, shard_name, options);
  if (setup.config.on_bad_input != planner::bad_input_policy::quarantine)
    return;
  size_t bad = 0;
  for (const auto& record : read.skipped)
    bad += record.kind != "empty";
  if (bad == 0)
    return;
  read.skipped.push_back(
      {"quarantined", shard_name,
       std::to_string(bad) + " bad record(s); all " +
           std::to_string(read.documents.size()) +
           " good document(s) of the shard dropped too"});
  read.documents.clear();
}

sources::image_options image_options_of(const planner::source_config& source) {
  sources::image_options image;
  image.max_pixels = source.image_max_pixels;
  image.patch_size = source.patch_size;
  image.mean = source.image_mean;
  image.std = source.image_std;
  return image;
}

// Reads, decodes and tokenizes one WebDataset shard into `out`. Each
// sample becomes one document: `patches` image positions, the caption's
// tokens (cut to fit one row) and EOS.
void load_image_text_shard(worker_actor* self, const pool_setup& setup,
                           uint32_t shard, uint32_t part,
                           const std::string& shard_name, shard_output& out,
                           std::vector<sources::bad_record>& skipped) {
  const auto& config = setup.config;
  const auto& source = config.sources[setup.source];
  sources::webdataset_options options;
  options.caption_field = source.caption_field;
  options.max_member_bytes = static_cast<uint64_t>(config.max_document_bytes);
  options.on_bad_input =
      config.on_bad_input == planner::bad_input_policy::fail
          ? sources::bad_input_action::fail
      : config.on_bad_input == planner::bad_input_policy::quarantine
          ? sources::bad_input_action::quarantine
          : sources::bad_input_action::skip;
  // Part `part` of a shard read in ranges. The last range runs to the end,
  // wherever the archive's headers lie.
  const auto ranges = plan_ranges(config, source, shard);
  if (ranges.count > 1) {
    options.range_begin = static_cast<int64_t>(uint64_t{part} * ranges.size);
    if (part + 1 < ranges.count)
      options.range_end =
          options.range_begin + static_cast<int64_t>(ranges.size);
  }
  options.index_cache = self->state.tar_indexes.get();
  const std::string& path = source.shards[shard];
  auto read = sources::read_image_text_shard(path, shard_name, options,
                                             image_options_of(source));
  skipped = std::move(read.skipped);
  const size_t capacity = static_cast<size_t>(config.sequence_length);
  for (auto& sample : read.samples) {
    tokenized_document document;
    document.patches = sample.image.patches;
    document.tokens.assign(sample.image.patches, config.image_token_id);
    auto caption = setup.tokenizer->encode(sample.caption, self->state.cache);
    // Config checks leave room for the image, one caption token and EOS.
    const size_t room = capacity - document.patches - 1;
    if (caption.size() > room) {
      caption.resize(room);
      document.truncated_caption = true;
    }
    document.tokens.insert(document.tokens.end(), caption.begin(),
                           caption.end());
    document.tokens.push_back(setup.tokenizer->eos_id());
    document.replaced_invalid_utf8 = has_invalid_utf8(sample.caption);
    document.key = std::move(sample.key);
    document.image = std::move(sample.image);
    document.encoded_image = std::move(sample.encoded_image);
    document.image_where = shard_name + ":" + sample.image_member;
    out.documents.push_back(std::move(document));
  }
}

// Lowers the calling thread's CPU priority by `nice` steps (each Linux
// thread has its own niceness), so that decoding yields to serving.
void lower_thread_priority(int nice, const std::string& source,
                           const std::shared_ptr<spdlog::logger>& log) {
  if (nice <= 0)
    return;
  const auto thread = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, thread);
  if (errno == 0 &&
      setpriority(PRIO_PROCESS, thread, std::min(19, current + nice)) == 0)
    return;
  log->warn("source={} worker keeps its CPU priority: setting niceness "
            "failed: {}",
            source, std::strerror(errno));
}

caf::behavior source_worker(worker_actor* self,
                            std::shared_ptr<const pool_setup> setup,
                            std::vector<std::string> shard_names) {
  auto log = get_logger("sources");
  const auto& source = setup->config.sources[setup->source];
  // A detached actor builds its behaviour on its own thread.
  lower_thread_priority(setup->config.worker_nice, source.name, log);
  sources::reader_options options;
  options.format = source.format == planner::source_format::jsonl
                       ? sources::shard_format::jsonl
                       : sources::shard_format::text;
  options.text_field = source.text_field;
  options.fail_on_bad_input =
      setup->config.on_bad_input == planner::bad_input_policy::fail;
  options.max_document_bytes = static_cast<uint64_t>(
      setup->config.max_document_bytes_of(setup->source));
  auto& series = metrics::series_of_source(source.name);

  return {
      [=](read_atom, uint32_t epoch, uint32_t position, uint32_t shard,
          uint32_t part) -> caf::result<shard_output> {
        auto started = std::chrono::steady_clock::now();
        shard_output out;
        out.epoch = epoch;
        out.position = position;
        out.part = part;
        sources::read_result read;
        const bool image_text =
            source.format == planner::source_format::webdataset;
        try {
          if (source.format == planner::source_format::indexed)
            read = read_indexed_part(self, *setup, source.shards[shard],
                                     shard_names[shard], part, out.documents);
          else if (image_text)
            load_image_text_shard(self, *setup, shard, part,
                                  shard_names[shard], out, read.skipped);
          else {
            auto ranged = options;
            if (byte_ranges(setup->config, source, shard) > 1) {
              const auto range =
                  static_cast<uint64_t>(setup->config.read_range_bytes);
              ranged.range_begin = uint64_t{part} * range;
              ranged.range_end = ranged.range_begin + range;
            }
            load_text_shard(*setup, ranged, source.shards[shard],
                            shard_names[shard], read);
            out.lines = read.lines;
          }
        } catch (const error& e) {
          log->error("source={} shard={} failed: {}", source.name,
                     shard_names[shard], e.what());
          return caf::make_error(caf::sec::runtime_error,
                                 "source=" + source.name + " " + e.what());
        }

        auto read_done = std::chrono::steady_clock::now();
        for (auto& record : read.skipped) {
          metrics::record_bad_input(source.name, record.kind);
          auto count = ++self->state.skipped;
          if (count <= skip_log_burst || count % skip_log_every == 0)
            log->warn("source={} skipped {} {}: {} (skipped so far by this "
                      "worker: {})",
                      source.name, record.kind, record.where, record.detail,
                      count);
          out.skipped_kinds.push_back(record.kind);
        }

        // Each document's latency: its share of the shard's read time plus
        // its own tokenization.
        const double read_share =
            read.documents.empty()
                ? 0
                : std::chrono::duration<double>(read_done - started).count() /
                      read.documents.size();
        // Image-text and indexed reads fill `out.documents` themselves, with
        // the time per document spread evenly over the read.
        const double share =
            out.documents.empty()
                ? 0
                : std::chrono::duration<double>(read_done - started).count() /
                      out.documents.size();
        for (const auto& document : out.documents) {
          series.documents.add();
          series.tokens.add(static_cast<double>(document.tokens.size()));
          series.document_seconds.observe(share);
          if (!document.truncated_caption)
            continue;
          auto count = ++self->state.truncated;
          if (count <= skip_log_burst || count % skip_log_every == 0)
            log->warn("source={} truncated the caption of {} to fit its "
                      "image and caption in sequence_length {} (truncated so "
                      "far by this worker: {})",
                      source.name, document.key,
                      setup->config.sequence_length, count);
        }

        for (auto& doc : read.documents) {
          auto tokenize_started = std::chrono::steady_clock::now();
          tokenized_document tokenized;
          tokenized.tokens = setup->tokenizer->encode(doc.text,
                                                      self->state.cache);
          tokenized.replaced_invalid_utf8 = has_invalid_utf8(doc.text);
          tokenized.tokens.push_back(setup->tokenizer->eos_id());
          series.documents.add();
          series.bytes.add(static_cast<double>(doc.text.size()));
          series.tokens.add(static_cast<double>(tokenized.tokens.size()));
          series.document_seconds.observe(
              read_share + std::chrono::duration<double>(
                               std::chrono::steady_clock::now() -
                               tokenize_started)
                               .count());
          if (tokenized.replaced_invalid_utf8)
            metrics::record_bad_input(source.name, "invalid_utf8");
          tokenized.key = std::move(doc.key);
          tokenized.line = doc.line;
          out.documents.push_back(std::move(tokenized));
        }
        out.busy_us = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - started)
                .count());
        log->debug("source={} shard={} epoch={} read: {} documents, {} "
                   "skipped, {:.2f} ms",
                   source.name, shard_names[shard], epoch,
                   out.documents.size(), out.skipped_kinds.size(),
                   out.busy_us / 1000.0);
        return out;
      },
  };
}

struct held_payload {
  std::vector<int32_t> tokens;
  // The image of an image-text document, shared with in-process fetches.
  // The pixels are dropped once the document is fetched whole, but
  // `encoded` (the image file) stays for a second fetch to decode again.
  std::shared_ptr<const sources::decoded_image> image;
  std::string encoded;
  std::string image_where;
  // First tokens of the pieces fetched so far. Pieces of a document do
  // not overlap, so the tokens not yet fetched are the document minus
  // their lengths. A piece fetched again (by a replacement constructor)
  // counts once.
  std::vector<uint32_t> fetched_offsets;
  size_t unfetched = 0;  // tokens
  uint64_t last_step = 0;     // latest step a piece was fetched for

  // Bytes of the tokens, pixels and image file, for /metrics.
  uint64_t bytes() const {
    return tokens.size() * sizeof(int32_t) +
           (image ? image->pixels.size() : 0) + encoded.size();
  }
};

// A fetch for a document the pool has not read yet (right after it
// started in place of a lost pool, or after a resume). The reply goes out
// as soon as the document is read, instead of failing and being retried.
struct deferred_fetch {
  uint64_t step = 0;
  uint64_t sequence = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
  caf::response_promise promise;  // a fetch through CAF
  std::string client;             // or a fetch through the payload server
  uint64_t id = 0;
};

struct pool_state {
  static inline const char* name = "source_pool";

  std::shared_ptr<const pool_setup> setup;
  std::shared_ptr<spdlog::logger> log;
  std::vector<caf::actor> workers;
  size_t next_worker = 0;
  // Moving average of a worker's time per read, in milliseconds (0 until
  // the first read is back).
  double read_ms = 0;
  std::vector<std::string> shard_names;
  // When an epoch end was last logged at info, and the epochs ended since
  // then. A small source can cycle many epochs a second.
  std::chrono::steady_clock::time_point epoch_logged_at;
  uint64_t epochs_since_log = 0;
  // Reads in flight per worker; a worker taken out of service stops once
  // its last read is back.
  std::map<caf::actor_addr, size_t> worker_load;
  std::vector<caf::actor> retiring;

  // Reads are dispatched in (epoch, position, part) order and released in
  // the same order, whichever worker finishes first.
  uint32_t dispatch_epoch = 0;
  uint32_t dispatch_position = 0;
  uint32_t dispatch_part = 0;
  std::vector<uint32_t> dispatch_order;
  uint32_t release_epoch = 0;
  uint32_t release_position = 0;
  uint32_t release_part = 0;
  std::vector<uint32_t> release_order;  // shard order of release_epoch
  uint64_t released_in_epoch = 0;
  // Documents released from the current shard so far: the record number
  // of the next one.
  uint32_t released_in_shard = 0;
  uint64_t lines_in_shard = 0;  // lines of the shard's ranges released
  size_t outstanding = 0;
  std::map<std::tuple<uint32_t, uint32_t, uint32_t>, shard_output> finished;
  // Reads each shard takes (see reads_per_shard); 0 until first needed.
  std::vector<uint32_t> shard_reads;

  uint64_t next_sequence = 0;
  uint64_t announce_from = 0;
  uint32_t skip_records = 0;  // documents to skip in the first shard
  std::deque<planner::document_meta> unannounced;
  std::unordered_map<uint64_t, held_payload> payloads;
  int64_t released_step = -1;
  // No plan refers to documents below this sequence any more, fetched or
  // not (a resume replays steps without fetching them).
  uint64_t sequence_floor = 0;
  std::pair<const int32_t*, const int32_t*> last_range;
  std::vector<deferred_fetch> deferred;

  uint32_t waiting_count = 0;
  caf::response_promise waiting;
  bool has_waiting = false;

  // Counters for status and logs.
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint64_t invalid_utf8_documents = 0;
  uint64_t images = 0;
  uint64_t image_patches = 0;
  uint64_t truncated_captions = 0;
  // Moving average of a worker's time per document, in microseconds.
  double latency_us = 0;
  std::map<std::string, uint64_t> skipped_by_kind;
  bool failed = false;
  // Bytes (tokens, pixels, image files) of the unannounced documents and
  // of every held payload, for /metrics.
  uint64_t buffered_bytes = 0;
  uint64_t held_bytes = 0;
  // Moving average of the bytes one read returns.
  double read_bytes = 0;
  // Images decoded a second time, for fetches after their pixels were
  // dropped.
  uint64_t decoded_again = 0;
};

using pool_actor = caf::stateful_actor<pool_state>;

// Logs the end of epoch st.release_epoch at info at most every 10 s per
// source, with the epochs ended since the last such line, and at debug
// otherwise.
void log_epoch_end(pool_state& st, const std::string& source) {
  constexpr auto interval = std::chrono::seconds(10);
  const auto now = std::chrono::steady_clock::now();
  ++st.epochs_since_log;
  if (st.epoch_logged_at != std::chrono::steady_clock::time_point{} &&
      now - st.epoch_logged_at < interval) {
    st.log->debug("source={} finished epoch {} ({} documents so far)", source,
                  st.release_epoch, st.documents);
    return;
  }
  if (st.epochs_since_log > 1)
    st.log->info("source={} finished epoch {} ({} documents so far, {} "
                 "epochs since the last report)",
                 source, st.release_epoch, st.documents, st.epochs_since_log);
  else
    st.log->info("source={} finished epoch {} ({} documents so far)", source,
                 st.release_epoch, st.documents);
  st.epoch_logged_at = now;
  st.epochs_since_log = 0;
}

// Stops the job with `message`. It is logged here unless a worker logged
// it already (`logged`).
void fail_pool(pool_actor* self, const std::string& message,
               bool logged = false) {
  auto& st = self->state;
  if (st.failed)
    return;
  st.failed = true;
  if (!logged)
    st.log->error("{}", message);
  self->send(st.setup->supervisor, fatal_atom::value, message);
}

std::vector<planner::document_meta> take_announcements(pool_actor* self,
                                                       uint32_t max_count) {
  auto& st = self->state;
  std::vector<planner::document_meta> out;
  while (!st.unannounced.empty() && out.size() < max_count) {
    out.push_back(std::move(st.unannounced.front()));
    auto held = st.payloads.find(out.back().sequence);
    st.buffered_bytes -= std::min<uint64_t>(
        st.buffered_bytes,
        held != st.payloads.end()
            ? held->second.bytes()
            : uint64_t{out.back().tokens} * sizeof(int32_t));
    st.unannounced.pop_front();
  }
  // Nothing ready means nothing buffered, whatever the counts show.
  if (st.unannounced.empty())
    st.buffered_bytes = 0;
  return out;
}

void dispatch(pool_actor* self);
void answer_deferred(pool_actor* self);

uint32_t shard_reads(pool_actor* self, uint32_t shard) {
  auto& st = self->state;
  const auto& source = st.setup->config.sources[st.setup->source];
  if (st.shard_reads.empty())
    st.shard_reads.assign(source.shards.size(), 0);
  if (st.shard_reads[shard] == 0)
    st.shard_reads[shard] = reads_per_shard(st.setup->config, source, shard);
  return st.shard_reads[shard];
}

// Updates the buffer gauges of /metrics.
void record_buffer(pool_actor* self) {
  auto& st = self->state;
  metrics::record_source_buffer(
      st.setup->config.sources[st.setup->source].name, st.unannounced.size(),
      st.buffered_bytes, st.held_bytes);
}

void release_finished(pool_actor* self) {
  auto& st = self->state;
  const auto& source = st.setup->config.sources[st.setup->source];
  const uint32_t shard_count = static_cast<uint32_t>(source.shards.size());

  for (;;) {
    auto found = st.finished.find(
        {st.release_epoch, st.release_position, st.release_part});
    if (found == st.finished.end())
      break;
    auto output = std::move(found->second);
    st.finished.erase(found);

    for (const auto& kind : output.skipped_kinds)
      ++st.skipped_by_kind[kind];
    if (!output.documents.empty()) {
      double per_document =
          static_cast<double>(output.busy_us) / output.documents.size();
      st.latency_us = st.latency_us == 0
                          ? per_document
                          : 0.9 * st.latency_us + 0.1 * per_document;
    }
    // A pool that starts inside a shard skips its first `record`
    // documents, across as many ranges as they fill.
    // TODO: a restart deep inside a large indexed dataset reads it again
    // from the first range; keeping the document index in the stream
    // position would let it start at the right range.
    if (st.release_order.empty())
      st.release_order = planner::epoch_shard_order(
          shard_count, st.setup->config.seed, source.name, st.release_epoch);
    const uint32_t shard = st.release_order[st.release_position];
    // A JSON Lines shard read in byte ranges names its records by byte
    // offset. Ranges are released in order, so counting the lines of the
    // ranges before gives each record the key a whole read would.
    const bool ranged_lines = source.format == planner::source_format::jsonl &&
                              shard_reads(self, shard) > 1;
    const auto count = static_cast<uint32_t>(output.documents.size());
    const uint32_t skip = std::min(st.skip_records, count);
    uint64_t read_total = 0;
    for (uint32_t index = skip; index < count; ++index) {
      auto& doc = output.documents[index];
      if (ranged_lines)
        doc.key = doc.key.substr(0, doc.key.rfind('@')) + ":" +
                  std::to_string(st.lines_in_shard + doc.line);
      const uint32_t record = st.released_in_shard + index;
      planner::document_meta meta;
      meta.source = st.setup->source;
      meta.sequence = st.next_sequence++;
      meta.epoch = output.epoch;
      meta.tokens = static_cast<uint32_t>(doc.tokens.size());
      meta.key = doc.key;
      meta.shard_position = output.position;
      meta.record = record;
      meta.patches = doc.patches;
      meta.atomic = doc.patches > 0;
      st.documents++;
      st.tokens += doc.tokens.size();
      if (doc.replaced_invalid_utf8)
        st.invalid_utf8_documents++;
      held_payload held;
      held.tokens = std::move(doc.tokens);
      if (doc.patches > 0) {
        st.images++;
        st.image_patches += doc.patches;
        st.truncated_captions += doc.truncated_caption;
        held.image = std::make_shared<const sources::decoded_image>(
            std::move(doc.image));
        held.encoded = std::move(doc.encoded_image);
        held.image_where = std::move(doc.image_where);
      }
      held.unfetched = held.tokens.size();
      const uint64_t bytes = held.bytes();
      read_total += bytes;
      st.held_bytes += bytes;
      st.payloads[meta.sequence] = std::move(held);
      if (meta.sequence >= st.announce_from) {
        st.buffered_bytes += bytes;
        st.unannounced.push_back(std::move(meta));
      }
    }
    st.read_bytes = st.read_bytes == 0
                        ? static_cast<double>(read_total)
                        : 0.8 * st.read_bytes + 0.2 * read_total;
    st.released_in_epoch += output.documents.size();
    st.released_in_shard += count;
    st.lines_in_shard += output.lines;
    st.skip_records -= skip;

    if (++st.release_part < shard_reads(self, shard))
      continue;
    st.release_part = 0;
    st.released_in_shard = 0;
    st.lines_in_shard = 0;
    if (++st.release_position == shard_count) {
      if (st.released_in_epoch == 0) {
        const bool quarantine = st.setup->config.on_bad_input ==
                                planner::bad_input_policy::quarantine;
        fail_pool(self,
                  "source=" + source.name + " epoch " +
                      std::to_string(st.release_epoch) +
                      " produced no usable document: " +
                      (quarantine
                           ? "every shard was quarantined or held only bad "
                             "records; fix the shards named in the warnings "
                             "above, or set on_bad_input: skip to keep the "
                             "good samples of bad shards"
                           : "every record was skipped as bad input; fix the "
                             "records named in the warnings above"));
        return;
      }
      log_epoch_end(st, source.name);
      st.release_epoch++;
      st.release_position = 0;
      st.release_order.clear();
      st.released_in_epoch = 0;
    }
  }

  answer_deferred(self);
  if (st.has_waiting && !st.unannounced.empty()) {
    st.has_waiting = false;
    st.waiting.deliver(take_announcements(self, st.waiting_count));
  }
  dispatch(self);
  record_buffer(self);
}

// Stops a worker taken out of service once it has no read in flight.
void read_returned(pool_actor* self, const caf::actor& worker) {
  auto& st = self->state;
  auto load = st.worker_load.find(worker.address());
  if (load != st.worker_load.end() && load->second > 0)
    load->second--;
  auto retired = std::find(st.retiring.begin(), st.retiring.end(), worker);
  if (retired != st.retiring.end() &&
      (load == st.worker_load.end() || load->second == 0)) {
    self->unlink_from(worker);
    self->send_exit(worker, caf::exit_reason::user_shutdown);
    st.worker_load.erase(worker.address());
    st.retiring.erase(retired);
  }
}

caf::actor spawn_worker(pool_actor* self) {
  auto& st = self->state;
  return self->spawn<caf::detached + caf::linked>(source_worker, st.setup,
                                                  st.shard_names);
}

// Grows or shrinks the pool. Which worker reads a shard never changes
// the stream: results are put back into (epoch, position) order.
void resize_pool(pool_actor* self, int count) {
  auto& st = self->state;
  const auto& source = st.setup->config.sources[st.setup->source];
  count = std::clamp(count, source.min_workers, source.max_workers);
  const auto before = st.workers.size();
  while (st.workers.size() < static_cast<size_t>(count))
    st.workers.push_back(spawn_worker(self));
  while (st.workers.size() > static_cast<size_t>(count)) {
    auto worker = st.workers.back();
    st.workers.pop_back();
    auto load = st.worker_load.find(worker.address());
    if (load == st.worker_load.end() || load->second == 0) {
      self->unlink_from(worker);
      self->send_exit(worker, caf::exit_reason::user_shutdown);
      st.worker_load.erase(worker.address());
    } else {
      st.retiring.push_back(worker);
    }
  }
  if (st.workers.size() != before) {
    st.log->info("source={} pool resized: {} -> {} workers", source.name,
                 before, st.workers.size());
    metrics::record_source_workers(source.name,
                                   static_cast<int>(st.workers.size()));
  }
  dispatch(self);
}

void dispatch(pool_actor* self) {
  auto& st = self->state;
  const auto& config = st.setup->config;
  const auto& source = config.sources[st.setup->source];
  const uint32_t shard_count = static_cast<uint32_t>(source.shards.size());
  const size_t per_worker = reads_per_worker(st.read_ms);
  // Reads in flight count at the mean size of recent reads.
  auto expected_bytes = [&] {
    return static_cast<double>(st.buffered_bytes) +
           static_cast<double>(st.outstanding) * st.read_bytes;
  };
  auto pick_worker = [&] {
    std::vector<size_t> loads;
    for (const auto& worker : st.workers) {
      auto load = st.worker_load.find(worker.address());
      loads.push_back(load == st.worker_load.end() ? 0 : load->second);
    }
    return least_busy_worker(loads, st.next_worker, per_worker);
  };

  while (!st.failed && !st.workers.empty() &&
         st.unannounced.size() <
             static_cast<size_t>(config.buffer_documents) &&
         expected_bytes() < static_cast<double>(config.buffer_bytes)) {
    auto index = pick_worker();
    if (!index)
      break;
    if (st.dispatch_position == 0 && st.dispatch_order.empty())
      st.dispatch_order = planner::epoch_shard_order(
          shard_count, config.seed, source.name, st.dispatch_epoch);
    uint32_t epoch = st.dispatch_epoch;
    uint32_t position = st.dispatch_position;
    uint32_t shard = st.dispatch_order[position];
    uint32_t part = st.dispatch_part;
    if (++st.dispatch_part == shard_reads(self, shard)) {
      st.dispatch_part = 0;
      if (++st.dispatch_position == shard_count) {
        st.dispatch_epoch++;
        st.dispatch_position = 0;
        st.dispatch_order.clear();
      }
    }

    auto worker = st.workers[*index];
    st.next_worker = (*index + 1) % st.workers.size();
    st.outstanding++;
    st.worker_load[worker.address()]++;
    self->request(worker, caf::infinite, read_atom::value, epoch, position,
                  shard, part)
        .then(
            [=](shard_output& output) {
              auto& s = self->state;
              s.outstanding--;
              // The worker's own time: a round trip would also count
              // the time the read waited behind another one.
              const double busy_ms = output.busy_us / 1000.0;
              s.read_ms = s.read_ms == 0 ? busy_ms
                                         : 0.8 * s.read_ms + 0.2 * busy_ms;
              read_returned(self, worker);
              s.finished.emplace(
                  std::make_tuple(output.epoch, output.position, output.part),
                  std::move(output));
              release_finished(self);
            },
            [=](caf::error& err) {
              self->state.outstanding--;
              read_returned(self, worker);
              // A worker's read error carries the message it logged, as
              // plain text. Other errors, such as a worker that died, are
              // rendered by CAF.
              const auto& context = err.context();
              if (context.match_elements<std::string>())
                fail_pool(self, context.get_as<std::string>(0), true);
              else
                fail_pool(self, self->system().render(err));
            });
  }
}

// Returns the tokens of a piece plus the next token of its document (the
// label of its last position), and records the fetch; or nullptr with
// `problem` set when the pool does not hold them. The range stays valid
// until the pool handles its next message.
const std::pair<const int32_t*, const int32_t*>* piece_tokens(
    pool_actor* self, uint64_t step, uint64_t sequence, uint32_t offset,
    uint32_t length, std::string& problem) {
  auto& s = self->state;
  auto found = s.payloads.find(sequence);
  const uint64_t max_length =
      static_cast<uint64_t>(s.setup->config.sequence_length);
  // 64-bit sums, so a hostile offset near 2^32 cannot wrap around.
  if (length == 0 || length > max_length || found == s.payloads.end() ||
      static_cast<uint64_t>(offset) + length > found->second.tokens.size()) {
    problem = "source=" + s.setup->config.sources[s.setup->source].name +
              " holds no tokens " + std::to_string(offset) + "+" +
              std::to_string(length) + " of sequence " +
              std::to_string(sequence) + " for step " + std::to_string(step) +
              (found == s.payloads.end()
                   ? " (sequence not held; next sequence is " +
                         std::to_string(s.next_sequence) + ")"
                   : " (document has " +
                         std::to_string(found->second.tokens.size()) +
                         " tokens)");
    return nullptr;
  }
  auto& held = found->second;
  const size_t end = static_cast<size_t>(std::min<uint64_t>(
      static_cast<uint64_t>(offset) + length + 1, held.tokens.size()));
  if (std::find(held.fetched_offsets.begin(), held.fetched_offsets.end(),
                offset) == held.fetched_offsets.end()) {
    held.fetched_offsets.push_back(offset);
    held.unfetched -= std::min<size_t>(held.unfetched, length);
  }
  held.last_step = std::max(held.last_step, step);
  s.last_range = {held.tokens.data() + offset, held.tokens.data() + end};
  return &s.last_range;
}

// Replies to one fetch now, or later for a document not read yet.
// Fetches waiting for documents not read yet; more than this means the
// requests are not ours (a real plan never runs that far ahead).
constexpr size_t max_deferred_fetches = 1 << 16;

// Decodes a fetched document's image again from its file bytes, which
// decoded once already, so it gives the same pixels.
std::shared_ptr<const sources::decoded_image> decode_again(
    pool_actor* self, const held_payload& held) {
  const auto& source = self->state.setup->config.sources[self->state.setup->source];
  // A shadow that takes over fetches plan_ahead steps again, so only the
  // first few images are logged, then every 100th with the count.
  const uint64_t count = ++self->state.decoded_again;
  if (count <= 5 || count % 100 == 0)
    self->state.log->info("source={} decodes {} again for a second fetch "
                          "({} images decoded again so far)",
                          source.name, held.image_where, count);
  try {
    return std::make_shared<const sources::decoded_image>(sources::decode_image(
        held.encoded, held.image_where, image_options_of(source)));
  } catch (const error& e) {
    // The same bytes decoded at read time, so this is a bug or damaged
    // memory, not bad input.
    self->state.log->error("source={} cannot decode {} again: {}", source.name,
                           held.image_where, e.what());
    return nullptr;
  }
}

void answer_fetch(pool_actor* self, deferred_fetch fetch) {
  auto& s = self->state;
  if (fetch.sequence >= s.next_sequence && !s.failed &&
      s.deferred.size() < max_deferred_fetches) {
    s.deferred.push_back(std::move(fetch));
    return;
  }
  std::string problem;
  auto* tokens = piece_tokens(self, fetch.step, fetch.sequence, fetch.offset,
                              fetch.length, problem);
  // The piece that starts an image-text document carries its image.
  std::shared_ptr<const sources::decoded_image> image;
  if (tokens != nullptr && fetch.offset == 0) {
    auto& held = s.payloads.at(fetch.sequence);
    image = held.image;
    if (!image && !held.encoded.empty()) {
      image = decode_again(self, held);
      if (!image) {
        tokens = nullptr;
        problem = "source=" + s.setup->config.sources[s.setup->source].name +
                  " cannot decode " + held.image_where + " again";
      }
    }
    // An image-text document is one piece, fetched now. Its pixels live on
    // in the batch being built, and a replacement constructor's fetch
    // decodes them again from the file bytes.
    if (held.image) {
      s.held_bytes -= std::min<uint64_t>(s.held_bytes, held.image->pixels.size());
      held.image.reset();
    }
  }
  if (!fetch.client.empty()) {
    auto reply =
        tokens == nullptr
            ? transport::encode_payload_reply(
                  fetch.id, static_cast<uint8_t>(errc::not_found), problem,
                  nullptr, 0)
            : transport::encode_payload_reply(
                  fetch.id, 0, "", tokens->first,
                  static_cast<size_t>(tokens->second - tokens->first),
                  image.get());
    s.setup->payload_server->send(fetch.client, std::move(reply));
    return;
  }
  if (tokens == nullptr)
    fetch.promise.deliver(caf::make_error(caf::sec::invalid_argument, problem));
  else
    fetch.promise.deliver(piece_payload{
        std::vector<int32_t>(tokens->first, tokens->second), std::move(image)});
}

// Replies to deferred fetches whose documents have been read since.
void answer_deferred(pool_actor* self) {
  auto& s = self->state;
  if (s.deferred.empty())
    return;
  std::vector<deferred_fetch> waiting;
  waiting.swap(s.deferred);
  for (auto& fetch : waiting)
    answer_fetch(self, std::move(fetch));
}

// Frees the tokens of documents whose every piece was fetched for steps
// that all ranks have moved past.
void free_released(pool_actor* self) {
  auto& st = self->state;
  for (auto it = st.payloads.begin(); it != st.payloads.end();) {
    const auto& held = it->second;
    bool done = held.unfetched == 0 &&
                static_cast<int64_t>(held.last_step) <= st.released_step;
    if (done || it->first < st.sequence_floor) {
      st.held_bytes -= std::min(st.held_bytes, it->second.bytes());
      it = st.payloads.erase(it);
    }
    else
      ++it;
  }
}

caf::behavior source_pool(pool_actor* self, pool_setup setup) {
  auto& st = self->state;
  st.setup = std::make_shared<const pool_setup>(std::move(setup));
  st.log = get_logger("actors");
  const auto& source = st.setup->config.sources[st.setup->source];
  const auto& start = st.setup->start;
  st.dispatch_epoch = start.epoch;
  st.dispatch_position = start.shard_position;
  st.release_epoch = start.epoch;
  st.release_position = start.shard_position;
  st.skip_records = start.record;
  st.next_sequence = start.first_sequence;
  st.announce_from = start.announce_from;
  if (start.shard_position != 0)
    st.dispatch_order = planner::epoch_shard_order(
        static_cast<uint32_t>(source.shards.size()), st.setup->config.seed,
        source.name, start.epoch);

  st.shard_names = shard_display_names(source.shards);
  for (int i = 0; i < source.workers; ++i)
    st.workers.push_back(spawn_worker(self));
  st.log->info(
      "source={} pool started: {} workers, {} shards, format {}, from "
      "sequence {} (epoch {}, shard position {}, record {})",
      source.name, source.workers, source.shards.size(),
      planner::to_string(source.format), start.first_sequence, start.epoch,
      start.shard_position, start.record);
  metrics::record_source_workers(source.name, source.workers);
  metrics::start_bad_input_counters(source.name,
                                    bad_input_kinds(st.setup->config, source));
  dispatch(self);

  return {
      [=](announce_atom, uint32_t max_count)
          -> caf::result<std::vector<planner::document_meta>> {
        auto& s = self->state;
        if (!s.unannounced.empty()) {
          auto out = take_announcements(self, max_count);
          dispatch(self);
          record_buffer(self);
          return out;
        }
        // Nothing ready yet: reply once a shard comes back.
        s.waiting = self->make_response_promise();
        s.waiting_count = max_count;
        s.has_waiting = true;
        return s.waiting;
      },
      [=](fetch_atom, uint64_t step, uint64_t sequence, uint32_t offset,
          uint32_t length) -> caf::result<piece_payload> {
        deferred_fetch fetch{step, sequence, offset, length,
                             self->make_response_promise(), "", 0};
        auto promise = fetch.promise;
        answer_fetch(self, std::move(fetch));
        return promise;
      },
      [=](serve_atom, const std::string& client, uint64_t id, uint64_t step,
          uint64_t sequence, uint32_t offset, uint32_t length) {
        // A remote constructor's fetch, arriving through the node's payload
        // server; the reply goes straight back over ZeroMQ.
        answer_fetch(self, deferred_fetch{step, sequence, offset, length, {},
                                          client, id});
      },
      [=](release_atom, uint64_t step, uint64_t sequence_floor) {
        auto& s = self->state;
        if (static_cast<int64_t>(step) > s.released_step ||
            sequence_floor > s.sequence_floor) {
          s.released_step = std::max(s.released_step, static_cast<int64_t>(step));
          s.sequence_floor = std::max(s.sequence_floor, sequence_floor);
          s.log->debug("source={} release step={} floor={}",
                       s.setup->config.sources[s.setup->source].name, step,
                       sequence_floor);
          free_released(self);
          record_buffer(self);
        }
      },
      [=](resize_atom, int32_t workers) { resize_pool(self, workers); },
      [=](stats_atom) {
        auto& s = self->state;
        counters stats;
        stats["documents"] = s.documents;
        stats["tokens"] = s.tokens;
        stats["invalid_utf8_documents"] = s.invalid_utf8_documents;
        stats["images"] = s.images;
        stats["image_patches"] = s.image_patches;
        stats["truncated_captions"] = s.truncated_captions;
        stats["buffered"] = s.unannounced.size();
        stats["held_payloads"] = s.payloads.size();
        stats["epoch"] = s.release_epoch;
        stats["latency_us"] = static_cast<uint64_t>(s.latency_us);
        stats["workers"] = s.workers.size();
        for (const auto& [kind, count] : s.skipped_by_kind)
          stats["skipped_" + kind] = count;
        return stats;
      },
  };
}

}  // namespace

std::vector<std::string> shard_display_names(
    const std::vector<std::string>& shards) {
  if (shards.empty())
    return {};
  fs::path common = fs::path(shards.front()).parent_path();
  for (const auto& shard : shards) {
    auto parent = fs::path(shard).parent_path();
    while (!common.empty() &&
           std::mismatch(common.begin(), common.end(), parent.begin(),
                         parent.end())
                   .first != common.end())
      common = common.parent_path();
  }
  std::vector<std::string> names;
  for (const auto& shard : shards)
    names.push_back(fs::path(shard).lexically_relative(common).string());
  return names;
}

caf::actor spawn_source_pool(caf::actor_system& system, pool_setup setup) {
  return system.spawn(source_pool, std::move(setup));
}

}  // namespace overlord::actors
