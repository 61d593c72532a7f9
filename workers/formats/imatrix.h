// Importance matrices as llama-imatrix writes them, for quantizing with `quant_weights`.
//
// The legacy binary format (".dat", written by llama-imatrix until mid-2025), little-endian:
//   int32 n_entries
//   n_entries x { int32 name_length, name bytes, int32 ncall, int32 nval, float32[nval] }
//   then, optionally, int32 last_call, int32 dataset_name_length, dataset name bytes
// Each entry holds the sums of squared activations of one weight's input columns over ncall
// calls; llama-quantize uses sums / ncall (as is when ncall is 0), and refuses non-finite values.
// Every count and length is checked against the file before anything is allocated: a hostile
// file gets INVALID_ARGUMENT (IMATRIX_INVALID) naming the entry and what is wrong, never a crash.
#ifndef MODELSMITH_WORKERS_FORMATS_IMATRIX_H_
#define MODELSMITH_WORKERS_FORMATS_IMATRIX_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

struct ImportanceMatrix {
  // Per weight (its GGUF name): one value per input column (times experts), sums / ncall.
  std::map<std::string, std::vector<float>> values;
  std::string dataset;  // the text it was computed on, when the file says
  int32_t chunks = 0;   // llama-imatrix's last_call: chunks processed (0 when absent)
};

// Reads a legacy ".dat" importance matrix.
absl::StatusOr<ImportanceMatrix> ReadLegacyImatrix(const RandomAccessObject& file);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_IMATRIX_H_
