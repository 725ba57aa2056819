// overlord._overlord: the C++ trainer client (client/client.hpp), the
// planner lookup (tools/admin_client.hpp), the GPT-2 tokenizer
// (sources/tokenizer.hpp) and the image decoder (sources/image.hpp) for
// Python. The public API is the pure-Python
// package `overlord` around it.

#include <malloc.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "client/client.hpp"
#include "client/python/batch_dict.hpp"
#include "common/error.hpp"
#include "sources/image.hpp"
#include "sources/tokenizer.hpp"
#include "tools/admin_client.hpp"
#include "transport/curve.hpp"
#include "transport/wire.hpp"

namespace py = pybind11;

namespace overlord::python {
namespace {

// Exception classes by errc value, registered by overlord/errors.py. The
// dict is never freed, because Python may finalize after static
// destructors would run.
py::dict* error_classes = nullptr;

void register_error_classes(py::dict classes) {
  if (!error_classes)
    error_classes = new py::dict();
  error_classes->clear();
  for (auto item : classes)
    (*error_classes)[item.first] = item.second;
}

// Sets the Python exception for an overlord::error: the registered class
// for its code, or RuntimeError before registration.
void raise_error(errc code, const char* message) {
  py::object type = py::reinterpret_borrow<py::object>(PyExc_RuntimeError);
  const int value = static_cast<int>(code);
  if (error_classes && error_classes->contains(value))
    type = (*error_classes)[py::int_(value)];
  else if (error_classes && error_classes->contains(0))
    type = (*error_classes)[py::int_(0)];
  py::object instance = type(message);
  try {
    instance.attr("code") = py::str(to_string(code));
  } catch (const py::error_already_set&) {
    // RuntimeError before registration: the message is enough.
  }
  PyErr_SetObject(type.ptr(), instance.ptr());
}

std::chrono::milliseconds to_milliseconds(double seconds, const char* name) {
  // The upper bound keeps the conversion to int64 milliseconds exact.
  if (!std::isfinite(seconds) || seconds <= 0 || seconds > 1e9)
    throw error(errc::invalid_config,
                std::string(name) + " must be a number of seconds in (0, 1e9], got " +
                    std::to_string(seconds));
  return std::chrono::milliseconds(
      std::max<int64_t>(1, static_cast<int64_t>(std::llround(seconds * 1000))));
}

// Raises the pending Python exception, such as KeyboardInterrupt, when a
// signal handler has run. Call with the GIL released.
void check_signals() {
  py::gil_scoped_acquire acquire;
  if (PyErr_CheckSignals() != 0)
    throw py::error_already_set();
}

// Requests the endpoints and node that serve `rank` from the planner
// (tools::find_rank), until `timeout_seconds` have passed. Python signal
// handlers run between attempts.
tools::rank_route find_rank(const std::string& planner, uint32_t rank,
                            double timeout_seconds,
                            const actors::tls_files& tls = {}) {
  const auto timeout = to_milliseconds(timeout_seconds, "timeout");
  py::gil_scoped_release release;
  return tools::find_rank(planner, rank, timeout, tls, check_signals);
}

// One rank's batch_client. next() releases the GIL while it waits, and a
// mutex serialises callers, because batch_client is not thread-safe.
class python_client {
 public:
  // Connects to `endpoint`, or, when `planner` is not empty, to the
  // endpoint the planner returns for the rank. With a planner, the client
  // fails over to the rank's other endpoints (its shadow) after
  // `failover_seconds` of silence, as overlord_pull --planner does.
  // `curve_secret` and `curve_server_public` name CURVE key files, and
  // `tls` the certificate files for planner lookups; empty: not used.
  python_client(const std::string& endpoint, const std::string& planner,
                uint32_t rank, uint32_t cp_rank, uint32_t prefetch,
                double timeout_seconds, uint64_t first_step,
                double failover_seconds, const std::string& curve_secret,
                const std::string& curve_server_public,
                const actors::tls_files& tls) {
    auto options = make_options(endpoint, rank, cp_rank, prefetch,
                                timeout_seconds, first_step);
    if (curve_secret.empty() != curve_server_public.empty())
      throw error(errc::invalid_config,
                  "CURVE needs both curve_secret and curve_server_public");
    if (!curve_secret.empty()) {
      auto keys = transport::read_secret_key(curve_secret, "curve_secret");
      options.curve_secret_key = keys.secret_key;
      options.curve_public_key = keys.public_key;
      options.curve_server_key =
          transport::read_public_key(curve_server_public, "curve_server_public");
    }
    if (!planner.empty()) {
      options.failover_timeout = to_milliseconds(failover_seconds, "failover_timeout");
      auto route = find_rank(planner, rank, timeout_seconds, tls);
      options.endpoint = route.endpoint;
      options.node = route.node;
      options.fallback_endpoints = route.endpoints;
      {
        // Hand the heap of the lookup's threads back to the kernel: it
        // would otherwise stay in the trainer's resident memory.
        py::gil_scoped_release release;
        malloc_trim(0);
      }

      // Before a failover the client asks the planner where the rank is
      // served now, because the planner may have promoted the shadow. The
      // CAF system of a lookup lives only for that lookup, so a trainer
      // carries no actor threads between failovers.
      options.resolve = [planner, rank, tls] {
        auto endpoints =
            tools::admin_client(planner, std::chrono::milliseconds(2000), tls)
                .endpoints(rank);
        malloc_trim(0);
        return endpoints;
      };
    }
    client_ = std::make_unique<client::batch_client>(std::move(options));
  }

  py::dict next() {
    std::optional<client::received_batch> received;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      // A signal interrupts zmq_poll with EINTR. Run the Python handler
      // and, unless it raised (as SIGINT's does), keep waiting with a new
      // timeout.
      for (;;) {
        try {
          received.emplace(client_->next());
          break;
        } catch (const zmq::error_t& e) {
          if (e.num() != EINTR)
            throw;
          check_signals();
        }
      }
    }
    return batch_to_dict(std::move(*received));
  }

  uint64_t next_step() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return client_->next_step();
  }

  std::string endpoint() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return client_->endpoint();
  }

  std::string node() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return client_->node();
  }

  uint32_t failovers() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return client_->failovers();
  }

  size_t ready() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    client_->collect_ready();
    return client_->buffered();
  }

 private:
  static client::client_options make_options(
      const std::string& endpoint, uint32_t rank, uint32_t cp_rank,
      uint32_t prefetch, double timeout_seconds, uint64_t first_step) {
    client::client_options options;
    options.endpoint = endpoint;
    options.rank = rank;
    options.cp_rank = cp_rank;
    options.prefetch = prefetch;
    options.timeout = to_milliseconds(timeout_seconds, "timeout");
    options.first_step = first_step;
    return options;
  }

  std::mutex mutex_;
  std::unique_ptr<client::batch_client> client_;
};

// Overlord's GPT-2 tokenizer for Python, so that Python data loaders
// tokenize at the speed of Overlord's source workers. encode releases the
// GIL, so several threads tokenize in parallel. Each thread keeps its own
// piece cache, as each worker actor does.
class python_tokenizer {
 public:
  explicit python_tokenizer(const std::string& directory)
      : tokenizer_(sources::gpt2_tokenizer::load(directory)) {}

  // Encodes a str (as UTF-8) or bytes. Invalid UTF-8 in bytes becomes
  // U+FFFD, as in Overlord's source workers. A str that cannot be UTF-8,
  // such as one with a lone surrogate, raises UnicodeEncodeError.
  py::array_t<int32_t> encode(const py::handle& text) const {
    const char* data = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_Check(text.ptr())) {
      if (PyBytes_AsStringAndSize(text.ptr(), const_cast<char**>(&data), &size) != 0)
        throw py::error_already_set();
    } else if (PyUnicode_Check(text.ptr())) {
      data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
      if (data == nullptr)
        throw py::error_already_set();
    } else {
      throw py::type_error(std::string("encode expects str or bytes, got ") +
                           Py_TYPE(text.ptr())->tp_name);
    }

    // str and bytes are immutable and the caller's reference keeps `text`
    // alive, so `data` stays valid while the GIL is released.
    auto ids = std::make_unique<std::vector<int32_t>>();
    {
      py::gil_scoped_release release;
      thread_local sources::gpt2_piece_cache cache;
      *ids = tokenizer_->encode(
          std::string_view(data, static_cast<size_t>(size)), cache);
    }

    // The array takes over the vector's buffer instead of copying it.
    auto* owned = ids.release();
    py::capsule free_ids(owned, [](void* pointer) {
      delete static_cast<std::vector<int32_t>*>(pointer);
    });
    return py::array_t<int32_t>({static_cast<py::ssize_t>(owned->size())},
                                {static_cast<py::ssize_t>(sizeof(int32_t))},
                                owned->data(), free_ids);
  }

  int32_t eos_id() const { return tokenizer_->eos_id(); }

  size_t vocab_size() const { return tokenizer_->vocab_size(); }

 private:
  std::shared_ptr<const sources::gpt2_tokenizer> tokenizer_;
};

// Decodes and shrinks a JPEG or PNG image as an image-text source worker
// does (sources/image.hpp), with the GIL released. Returns a dict with
// height, width, channels, patches, uint8 pixels [channels, height, width]
// and the mean and std that normalise_image takes.
py::dict decode_image(const py::bytes& data, const std::string& where,
                      uint64_t max_pixels, uint32_t patch_size,
                      std::array<float, 3> mean, std::array<float, 3> std) {
  if (patch_size == 0 || max_pixels < static_cast<uint64_t>(patch_size) * patch_size)
    throw py::value_error("max_pixels must hold at least one patch of patch_size^2 "
                          "pixels, got max_pixels=" + std::to_string(max_pixels) +
                          " and patch_size=" + std::to_string(patch_size));
  for (float value : std)
    if (!(value > 0))
      throw py::value_error("std values must be > 0, because pixels are divided by them");

  sources::image_options options;
  options.max_pixels = max_pixels;
  options.patch_size = patch_size;
  options.mean = mean;
  options.std = std;
  std::string bytes = data;  // decode_image takes a std::string
  auto image = std::make_unique<sources::decoded_image>();
  {
    py::gil_scoped_release release;
    *image = sources::decode_image(bytes, where, options);
  }

  py::dict out;
  out["height"] = image->height;
  out["width"] = image->width;
  out["channels"] = image->channels;
  out["patches"] = image->patches;
  // The array takes over the pixel buffer instead of copying it.
  auto* owned = image.release();
  py::capsule free_image(owned, [](void* pointer) {
    delete static_cast<sources::decoded_image*>(pointer);
  });
  out["mean"] = py::make_tuple(owned->mean[0], owned->mean[1], owned->mean[2]);
  out["std"] = py::make_tuple(owned->std[0], owned->std[1], owned->std[2]);
  out["pixels"] = py::array_t<uint8_t>(
      {static_cast<py::ssize_t>(owned->channels),
       static_cast<py::ssize_t>(owned->height),
       static_cast<py::ssize_t>(owned->width)},
      owned->pixels.data(), free_image);
  return out;
}

// Returns the float32 array [channels, height, width] of normalised values
// of uint8 `pixels` of the same shape, as transport::normalise_pixels
// computes them, with the GIL released.
py::array_t<float> normalise_image(
    py::array_t<uint8_t, py::array::c_style> pixels,
    const std::vector<float>& mean, const std::vector<float>& std) {
  if (pixels.ndim() != 3)
    throw py::value_error("pixels must have 3 dimensions [channels, height, "
                          "width], got " + std::to_string(pixels.ndim()));
  const auto channels = static_cast<uint32_t>(pixels.shape(0));
  if (mean.size() != channels || std.size() != channels)
    throw py::value_error("mean and std need one value per channel (" +
                          std::to_string(channels) + "), got " +
                          std::to_string(mean.size()) + " and " +
                          std::to_string(std.size()));
  for (float value : std)
    if (!(value > 0))
      throw py::value_error("std values must be > 0, because pixels are divided by them");
  const size_t plane = static_cast<size_t>(pixels.shape(1)) * pixels.shape(2);
  py::array_t<float> out({pixels.shape(0), pixels.shape(1), pixels.shape(2)});
  const uint8_t* in = pixels.data();
  float* target = out.mutable_data();
  {
    py::gil_scoped_release release;
    transport::normalise_pixels(in, channels, plane, mean.data(), std.data(),
                                target);
  }
  return out;
}

}  // namespace
}  // namespace overlord::python

PYBIND11_MODULE(_overlord, module) {
  using namespace overlord::python;
  module.doc() = "C++ core of the overlord package; use overlord.Client.";

  // Load pybind11's NumPy function table now, while the import lock
  // serialises callers. pybind11 2.10 fills it in a function-local static
  // on first use. When two threads convert their first batches at once,
  // one imports NumPy inside the static's initialiser and gives up the
  // GIL, and the other waits on the static while holding the GIL, so both
  // deadlock.
  (void)py::dtype::of<int32_t>();

  py::register_exception_translator([](std::exception_ptr pending) {
    try {
      if (pending)
        std::rethrow_exception(pending);
    } catch (const overlord::error& e) {
      raise_error(e.code(), e.what());
    } catch (const zmq::error_t& e) {
      raise_error(overlord::errc::io_error,
                  (std::string("ZeroMQ error: ") + e.what()).c_str());
    }
  });

  module.def("register_error_classes", &register_error_classes,
             py::arg("classes"),
             "Set the exception class raised for each overlord::errc value "
             "(key 0 is the fallback for unknown codes).");

  module.def("errc_names", [] {
    py::dict out;
    for (int value = 1; value <= 7; ++value)
      out[py::int_(value)] =
          overlord::to_string(static_cast<overlord::errc>(value));
    return out;
  }, "Return the overlord::errc values and their names.");

  module.def("look_up",
             [](const std::string& planner, uint32_t rank, double timeout) {
               auto route = find_rank(planner, rank, timeout);
               return std::make_pair(route.endpoint, route.node);
             },
             py::arg("planner"), py::arg("rank"), py::arg("timeout"),
             "Return (endpoint, node) of the rank's constructor from the "
             "planner at HOST:PORT, retrying while the rank is unassigned.");

  py::class_<batch_buffer>(module, "BatchBuffer", py::buffer_protocol(),
                           "Received ZeroMQ message that owns a batch's arrays.")
      .def_buffer([](batch_buffer& buffer) {
        const auto& received = buffer.received();
        return py::buffer_info(const_cast<void*>(received.data()), 1,
                               py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(received.size())},
                               {static_cast<py::ssize_t>(1)},
                               /*readonly=*/true);
      })
      .def_property_readonly(
          "size", [](const batch_buffer& buffer) { return buffer.received().size(); },
          "Size of the message in bytes.");

  py::class_<python_client>(module, "BatchClient",
                            "One rank's connection to its constructor.")
      .def(py::init([](const std::string& endpoint, const std::string& planner,
                       uint32_t rank, uint32_t cp_rank, uint32_t prefetch,
                       double timeout, uint64_t first_step,
                       double failover_timeout, const std::string& curve_secret,
                       const std::string& curve_server_public,
                       const std::string& tls_cert, const std::string& tls_key,
                       const std::string& tls_ca) {
             return std::make_unique<python_client>(
                 endpoint, planner, rank, cp_rank, prefetch, timeout,
                 first_step, failover_timeout, curve_secret,
                 curve_server_public,
                 overlord::actors::tls_files{tls_cert, tls_key, tls_ca});
           }),
           py::arg("endpoint"), py::arg("planner"), py::arg("rank"),
           py::arg("cp_rank"), py::arg("prefetch"), py::arg("timeout"),
           py::arg("first_step"), py::arg("failover_timeout"),
           py::arg("curve_secret") = "", py::arg("curve_server_public") = "",
           py::arg("tls_cert") = "", py::arg("tls_key") = "",
           py::arg("tls_ca") = "")
      .def("next", &python_client::next,
           "Wait for the next step's batch and return it as a dict.")
      .def_property_readonly("next_step", &python_client::next_step,
                             "Step that next() returns.")
      .def_property_readonly("endpoint", &python_client::endpoint,
                             "Endpoint that requests go to now.")
      .def_property_readonly("node", &python_client::node,
                             "Node id serving the endpoint, from the planner "
                             "lookups before the start and each failover; "
                             "empty when not known.")
      .def_property_readonly("failovers", &python_client::failovers,
                             "Times the client moved to another endpoint.")
      .def("ready", &python_client::ready,
           "Receive replies that have arrived and return how many batches "
           "are ready ahead of the next one.");

  py::class_<python_tokenizer>(
      module, "Tokenizer",
      "Overlord's GPT-2 byte-level BPE tokenizer (js-tiktoken's gpt2 ids).")
      .def(py::init<const std::string&>(), py::arg("directory"),
           "Load encoder.json and vocab.bpe from `directory`.")
      .def("encode", &python_tokenizer::encode, py::arg("text"),
           "Return the token ids of a str or of UTF-8 bytes as an int32 "
           "NumPy array, without an end-of-text id. Invalid UTF-8 in bytes "
           "becomes U+FFFD; the GIL is released while encoding.")
      .def_property_readonly("eos_id", &python_tokenizer::eos_id,
                             "Id of <|endoftext|> (50256 for GPT-2).")
      .def_property_readonly("vocab_size", &python_tokenizer::vocab_size,
                             "Number of token ids, including eos_id.");

  module.def("decode_image", &decode_image, py::arg("data"), py::arg("where") = "",
             py::arg("max_pixels") = 224 * 224, py::arg("patch_size") = 14,
             py::arg("mean") = std::array<float, 3>{0.5f, 0.5f, 0.5f},
             py::arg("std") = std::array<float, 3>{0.5f, 0.5f, 0.5f},
             "Decode JPEG or PNG bytes like an image-text source worker: shrink "
             "to max_pixels and max_pixels / patch_size^2 patches. Return a dict "
             "with height, width, channels, patches, uint8 pixels [channels, "
             "height, width], and the mean and std for normalise_image. Raises "
             "InvalidInputError naming `where` for bad data; the GIL is "
             "released while decoding.");
  module.def("normalise_image", &normalise_image, py::arg("pixels"), py::arg("mean"),
             py::arg("std"),
             "Return float32 (v/255 - mean[c]) / std[c] of uint8 pixels [channels, "
             "height, width], with the same bits as the C++ client's "
             "transport::normalise_image. The GIL is released while computing.");
}
