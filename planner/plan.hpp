// Metadata the planner works on and the plans it hands out. The planner
// never sees document text or tokens, only these records.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace overlord::planner {

// One tokenized document as its source pool announces it.
struct document_meta {
  uint32_t source = 0;    // index into job_config::sources
  uint64_t sequence = 0;  // position in the source's stream, across epochs
  uint32_t epoch = 0;
  uint32_t tokens = 0;  // token count including the EOS appended to it
  std::string key;      // stable sample key, e.g. "mail-0003.jsonl:17"
  // Where the document sits in its source's stream: position of its shard
  // in the epoch's shard order, and its index among the shard's kept
  // documents. A replacement pool resumes the stream from here.
  uint32_t shard_position = 0;
  uint32_t record = 0;
  // Image positions at the start of the document (0 for text), for cost
  // models that charge a vision encoder by patch.
  uint32_t patches = 0;
  // Placed whole in one row, never split: the document fits a row by
  // construction (an image with its caption).
  bool atomic = false;
};

// A contiguous slice of one document placed in one packed row. Documents
// longer than a row are split into several pieces.
struct piece {
  uint32_t source = 0;
  uint64_t sequence = 0;
  uint32_t epoch = 0;
  std::string key;
  uint32_t offset = 0;  // first token of the slice within the document
  uint32_t length = 0;
  uint32_t document_tokens = 0;
  uint32_t patches = 0;  // image positions inside this slice
  bool atomic = false;   // the whole document, which must not be split

  bool starts_document() const { return offset == 0; }
  bool ends_document() const { return offset + length == document_tokens; }
};

using row_plan = std::vector<piece>;

// The rows one rank receives for one step.
struct rank_plan {
  uint64_t step = 0;
  uint32_t rank = 0;
  uint32_t sequence_length = 0;  // tokens per row in this step
  std::vector<row_plan> rows;
  double cost = 0;       // modelled compute cost of these rows
  double imbalance = 1;  // the step's max over mean rank cost
  uint64_t carried_pieces = 0;
};

// Everything decided for one global step.
struct step_plan {
  uint64_t step = 0;
  uint32_t sequence_length = 0;   // tokens per row in this step
  std::vector<row_plan> rows;     // global rows, independent of rank count
  std::vector<rank_plan> ranks;   // rows split across ranks
  uint64_t padding_tokens = 0;
  uint64_t carried_pieces = 0;    // pieces moved on to the next step
  std::vector<double> rank_costs;
  double imbalance = 1;           // max over mean rank cost
};

}  // namespace overlord::planner
