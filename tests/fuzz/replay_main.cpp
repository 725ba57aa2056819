// Replays saved inputs through a fuzz target without libFuzzer, so a
// normal gcc build checks on every test run that inputs which once crashed
// a target (and its seed inputs) still pass. Usage: REPLAY DIR...; every
// file under each DIR is one input, except names that start with '.'.
// A missing DIR counts as empty, because git keeps no empty folders, but
// the run fails when no input at all was found.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Defined by the targets that load something once, such as a vocabulary.
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv)
    __attribute__((weak));

namespace {

std::vector<std::filesystem::path> list_inputs(
    const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> inputs;
  std::error_code status;
  if (!std::filesystem::is_directory(dir, status))
    return inputs;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file())
      continue;
    if (entry.path().filename().string().rfind('.', 0) == 0)
      continue;
    inputs.push_back(entry.path());
  }
  std::sort(inputs.begin(), inputs.end());
  return inputs;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize != nullptr)
    LLVMFuzzerInitialize(&argc, &argv);

  std::size_t replayed = 0;
  for (int i = 1; i < argc; ++i) {
    for (const auto& path : list_inputs(argv[i])) {
      std::ifstream in(path, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        return 1;
      }
      // Printed first, so that a crash names its input.
      std::fprintf(stderr, "replaying %s (%zu bytes)\n", path.c_str(),
                   bytes.size());
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()),
                             bytes.size());
      ++replayed;
    }
  }

  if (replayed == 0) {
    std::fprintf(stderr,
                 "no inputs found under the given folders; check the test's "
                 "data files\n");
    return 1;
  }
  std::fprintf(stderr, "replayed %zu inputs without a failure\n", replayed);
  return 0;
}
