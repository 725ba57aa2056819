#include "client/python/batch_dict.hpp"

#include <pybind11/numpy.h>

#include <string>
#include <vector>

#include "common/error.hpp"
#include "transport/wire.hpp"

namespace py = pybind11;

namespace overlord::python {
namespace {

// Returns a read-only array of `shape` over a FlatBuffers vector, with
// `base` as its owner. No data is copied.
template <class T>
py::array view_vector(const flatbuffers::Vector<T>* values,
                      const std::vector<py::ssize_t>& shape,
                      const py::object& base, const char* field) {
  size_t expected = 1;
  for (auto extent : shape)
    expected *= static_cast<size_t>(extent);
  const size_t count = values ? values->size() : 0;
  if (count != expected)
    throw error(errc::invalid_input,
                std::string("batch field '") + field + "' has " +
                    std::to_string(count) + " values, expected " +
                    std::to_string(expected));

  // NumPy needs a non-null pointer even for an empty array.
  static const T empty_storage{};
  const T* data = count ? values->data() : &empty_storage;
  py::array out(py::dtype::of<T>(), shape, {}, data, base);
  // The memory belongs to the received message and the digest was taken
  // over it, so callers must copy before writing.
  out.attr("setflags")(py::arg("write") = false);
  return out;
}

py::list view_documents(const wire::Batch& batch) {
  std::vector<std::string> names;
  if (batch.source_names())
    for (auto* name : *batch.source_names())
      names.push_back(name->str());

  py::list out;
  if (!batch.documents())
    return out;
  for (auto* slice : *batch.documents()) {
    py::dict document;
    document["source"] = slice->source() < names.size()
                             ? py::str(names[slice->source()])
                             : py::str("");
    document["source_index"] = slice->source();
    document["key"] = slice->key() ? slice->key()->str() : std::string();
    document["epoch"] = slice->epoch();
    document["row"] = slice->row();
    document["row_offset"] = slice->row_offset();
    document["length"] = slice->length();
    document["document_offset"] = slice->document_offset();
    document["document_tokens"] = slice->document_tokens();
    out.append(std::move(document));
  }
  return out;
}

// One dict per image. `pixels` is a read-only uint8 array [channels,
// height, width] over the message, like the token arrays. `mean` and `std`
// are tuples with one value per channel.
py::list view_images(const wire::Batch& batch, const py::object& base) {
  py::list out;
  if (!batch.images())
    return out;
  for (auto* image : *batch.images()) {
    py::dict entry;
    entry["row"] = image->row();
    entry["row_offset"] = image->row_offset();
    entry["patches"] = image->patches();
    entry["height"] = image->height();
    entry["width"] = image->width();
    entry["channels"] = image->channels();
    entry["source_index"] = image->source();
    entry["key"] = image->key() ? image->key()->str() : std::string();
    entry["pixels"] = view_vector(
        image->pixels(),
        {static_cast<py::ssize_t>(image->channels()),
         static_cast<py::ssize_t>(image->height()),
         static_cast<py::ssize_t>(image->width())},
        base, "images.pixels");
    py::tuple mean(image->channels());
    py::tuple deviation(image->channels());
    for (uint32_t c = 0; c < image->channels(); ++c) {
      mean[c] = image->mean()->Get(c);
      deviation[c] = image->std()->Get(c);
    }
    entry["mean"] = std::move(mean);
    entry["std"] = std::move(deviation);
    out.append(std::move(entry));
  }
  return out;
}

py::dict view_counters(const wire::Batch& batch) {
  py::dict out;
  const auto* counters = batch.counters();
  if (!counters)
    return out;
  out["tokens"] = counters->tokens();
  out["padding"] = counters->padding();
  out["documents_started"] = counters->documents_started();
  out["documents_split"] = counters->documents_split();
  out["carried_pieces"] = counters->carried_pieces();
  out["rank_cost"] = counters->rank_cost();
  out["imbalance"] = counters->imbalance();
  return out;
}

template <class T>
py::list to_list(const flatbuffers::Vector<T>* values) {
  py::list out;
  if (values)
    for (auto value : *values)
      out.append(value);
  return out;
}

}  // namespace

py::dict batch_to_dict(client::received_batch received) {
  // The FlatBuffers table lives in the message's heap buffer, which a move
  // of the message does not relocate, so `batch` stays valid below.
  py::object holder = py::cast(batch_buffer(std::move(received)));
  const wire::Batch& batch = holder.cast<const batch_buffer&>().received().batch();

  const auto rows = static_cast<py::ssize_t>(batch.rows());
  const auto row_length = static_cast<py::ssize_t>(batch.row_length());
  const std::vector<py::ssize_t> matrix{rows, row_length};
  const size_t split_count = batch.row_splits() ? batch.row_splits()->size() : 0;
  const size_t boundary_count = batch.cu_seqlens() ? batch.cu_seqlens()->size() : 0;

  py::dict out;
  out["tokens"] = view_vector(batch.tokens(), matrix, holder, "tokens");
  out["labels"] = view_vector(batch.labels(), matrix, holder, "labels");
  out["loss_mask"] = view_vector(batch.loss_mask(), matrix, holder, "loss_mask");
  out["position_ids"] =
      view_vector(batch.position_ids(), matrix, holder, "position_ids");
  out["cu_seqlens"] =
      view_vector(batch.cu_seqlens(),
                  {static_cast<py::ssize_t>(boundary_count)}, holder,
                  "cu_seqlens");
  out["row_splits"] =
      view_vector(batch.row_splits(), {static_cast<py::ssize_t>(split_count)},
                  holder, "row_splits");

  out["step"] = batch.step();
  out["rank"] = batch.rank();
  out["rows"] = batch.rows();
  out["sequence_length"] = batch.sequence_length();
  out["row_length"] = batch.row_length();
  out["pad_id"] = batch.pad_id();
  out["cp_size"] = batch.cp_size();
  out["cp_rank"] = batch.cp_rank();
  out["cp_chunks"] = to_list(batch.cp_chunks());
  out["digest"] = transport::batch_digest(batch);
  py::list names;
  if (batch.source_names())
    for (auto* name : *batch.source_names())
      names.append(name->str());
  out["source_names"] = std::move(names);
  out["documents"] = view_documents(batch);
  out["images"] = view_images(batch, holder);
  out["counters"] = view_counters(batch);
  return out;
}

}  // namespace overlord::python
