// Importance matrices as llama-imatrix writes them, for quantizing with `quant_weights`.
//
// The legacy binary format (".dat", written by llama-imatrix until mid-2025), little-endian:
//   int32 n_entries
//   n_entries x { int32 name_length, name bytes, int32 ncall, int32 nval, float32[nval] }
//   then, optionally, int32 last_call, int32 dataset_name_length, dataset name bytes
// Each entry holds the sums of squared activations of one weight's input columns over ncall
// calls; llama-quantize uses sums / ncall (as is when ncall is 0), and refuses non-finite values.
//
// The GGUF format (llama-imatrix since mid-2025; tools/imatrix/imatrix.cpp writes it, and
// tools/quantize/quantize.cpp's load_imatrix reads it): per weight, an F32 tensor
// "<weight>.in_sum2" of ne [n_per_row, n_matrices] (sums of squared activations; one matrix per
// expert) and an F32 tensor "<weight>.counts" of ne [1, n_matrices] (tokens seen); metadata
// imatrix.datasets (string array), imatrix.chunk_count and imatrix.chunk_size (u32). Values are
// in_sum2 / count per matrix, and 1 for a matrix that never saw a token.
//
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
  std::string dataset;  // the (first) text it was computed on, when the file says
  int32_t chunks = 0;   // chunks processed (legacy last_call, GGUF imatrix.chunk_count; 0 when absent)
};

// Reads a legacy ".dat" importance matrix.
absl::StatusOr<ImportanceMatrix> ReadLegacyImatrix(const RandomAccessObject& file);
// Reads a GGUF importance matrix.
absl::StatusOr<ImportanceMatrix> ReadGgufImatrix(const RandomAccessObject& file);
// Either format, told apart by the GGUF magic, as llama-quantize does.
absl::StatusOr<ImportanceMatrix> ReadImatrix(const RandomAccessObject& file);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_IMATRIX_H_
