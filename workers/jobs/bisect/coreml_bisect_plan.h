// Bisecting a Core ML ML Program: where its stored bytes are used, where it can be cut, and what
// each chunk program holds. No I/O.
//
// Positions are the compute ops of the main block, in program order (mil_program.h). Each
// constant op with blobs (a const, or a constexpr op and its parameters) weighs its blobs' stored
// bytes at the first compute op that reads it, directly or through a constexpr chain; a constant
// read only as a block output weighs at the last position. Cuts fall between positions; the
// values that cross a cut are the outputs of compute ops before it that compute ops after it
// read. The cuts are chosen as the ONNX bisect chooses them (ChooseOnnxCuts: the exact min-max
// split, preferring the fewest crossing values among splits within 5 % of the best).
//
// A chunk program holds, in the original order, its compute ops and every constant op they read
// (a constant read on both sides of a cut is in both chunks); its inputs are the original inputs
// it reads (in the function's order) and the values crossing in; its outputs the values crossing
// out and the original outputs it makes (in the block's order).
//
// Float16 values crossing a cut: kept as float16 from specification version 7 (iOS16, which has
// FLOAT16 multi-array inputs and outputs) on, so nothing is added and the values pass unchanged.
// A version-6 program cannot take float16 inputs, so there the producing chunk casts the value
// to float32 as "<name>_fp32" and the consuming chunk casts it back to "<name>", as coremltools'
// bisect_model does (fp16 -> fp32 -> fp16 is exact).
#ifndef MODELSMITH_WORKERS_JOBS_BISECT_COREML_BISECT_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_BISECT_COREML_BISECT_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coreml/mlmodel.pb.h"
#include "workers/formats/mil_program.h"

namespace modelsmith {

struct CoreMlChunkPlan {
  size_t first_position = 0;
  size_t end_position = 0;               // one past the last
  std::vector<size_t> ops;               // op indices, program order, constants included
  std::vector<std::string> inputs;       // original inputs read, then crossing values
  std::vector<std::string> crossing_in;  // the crossing values among `inputs`
  std::vector<std::string> outputs;      // crossing values, then original outputs made here
  std::vector<std::string> crossing_out;
  uint64_t size_bytes = 0;  // attributed stored bytes
};

struct CoreMlBisectPlan {
  std::vector<uint64_t> position_bytes;  // attributed stored bytes per compute op
  std::vector<uint32_t> crossings;       // values crossing the cut after each position
  std::vector<CoreMlChunkPlan> chunks;
  uint64_t total_bytes = 0;
  // What coremltools' bisect_model measures for a 2-way split (shared/reference/coreml.md
  // section 5): per const parameter its numpy bytes (sub-byte types one byte per element) in
  // program order, cut at the first compute op with one output read once past half. 0 and 0 when
  // it finds no cut.
  uint64_t program_order_first = 0, program_order_second = 0;
};

// INVALID_ARGUMENT BISECT_TOO_MANY_CHUNKS (field bisect.chunks) when there are fewer compute ops
// than chunks.
absl::StatusOr<CoreMlBisectPlan> PlanCoreMlBisect(const MilProgramIndex& index, size_t chunks);

// Chunk `chunk`'s model: the original with its description's inputs and outputs, the main
// function's inputs and the block's ops and outputs replaced (blob references still the
// original's). FAILED_PRECONDITION COREML_BOUNDARY_UNSUPPORTED when a crossing value has a type a
// model input cannot have (not a float16/float32/float64/int32 tensor of known shape).
absl::StatusOr<coreml::Model> BuildCoreMlChunk(const coreml::Model& original, const MilProgramIndex& index,
                                               const CoreMlChunkPlan& chunk);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_BISECT_COREML_BISECT_PLAN_H_
