// Conversion of a received batch into the Python dict that overlord.Client
// returns. The NumPy arrays in the dict view the ZeroMQ message in place.
#pragma once

#include <pybind11/pybind11.h>

#include "client/client.hpp"

namespace overlord::python {

// Owner of one received ZeroMQ message. Every array of a batch dict has
// the batch_buffer as its NumPy base object, so the message lives as long
// as any of its arrays.
class batch_buffer {
 public:
  explicit batch_buffer(client::received_batch received)
      : received_(std::move(received)) {}

  const client::received_batch& received() const { return received_; }

 private:
  client::received_batch received_;
};

// Returns the batch as a dict of read-only NumPy arrays that share memory
// with the message, plus plain Python values (step, rank, digest,
// documents, counters, ...). Throws overlord::error(invalid_input) when an
// array's length does not match rows * row_length.
pybind11::dict batch_to_dict(client::received_batch received);

}  // namespace overlord::python
