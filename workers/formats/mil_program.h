// An ML Program's main function read for inspection and bisection (shared/reference/coreml.md
// sections 2 and 4), over the op list of its block as written.
//
// Ops come in three kinds: "const" (a value, possibly in a weight file), constexpr_* (a weight
// decompressed at load time from const parameters: iOS16 ops keep them as attributes, iOS18 ops
// as input values or name bindings to other constexpr ops), and compute ops (everything else,
// each a position of its own, in program order). A weight is a const or constexpr op read by a
// compute op; its stored bytes are the sizes of every blob reachable from it (its own values and,
// through name bindings, the const/constexpr ops it reads), its dense bytes the element count of
// its output times the output type's size. Each weight is placed at its first compute consumer
// (not where its op sits: the torch frontend declares compressed weights at the top of the block)
// and counted once there.
//
// Checks (INVALID_ARGUMENT MIL_PROGRAM_INVALID naming the op and value): a "main" function with
// one block specialization; every value an op reads is a function input or the output of an
// earlier op (so the program has no cycle); output names are unique; the block outputs exist;
// every blob reference lies on a record of its weight file, of the dtype the value declares.
#ifndef MODELSMITH_WORKERS_FORMATS_MIL_PROGRAM_H_
#define MODELSMITH_WORKERS_FORMATS_MIL_PROGRAM_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coreml/mlmodel.pb.h"
#include "workers/formats/coreml_package.h"

namespace modelsmith {

struct MilBlobRef {
  std::string file_name;  // as the program writes it
  uint64_t record_offset = 0;
  MilBlob blob;
  std::string param;      // the parameter holding it
  int declared_type = 0;  // the MIL DataType its value declares
};

enum class MilOpKind { kConst, kConstexpr, kCompute };

struct MilOpInfo {
  std::string name;  // the "name" attribute, or the first output
  std::string type;
  MilOpKind kind = MilOpKind::kCompute;
  std::vector<std::string> reads;    // the values it reads (nested blocks' outer reads too), sorted, unique
  std::vector<std::string> outputs;  // in order
  std::vector<MilBlobRef> blobs;     // its own blob references
  int position = -1;                 // compute ops: their index among compute ops
};

struct MilWeight {
  size_t op = 0;                // the const or constexpr op whose output a compute op reads
  std::vector<size_t> sources;  // it and every const/constexpr op it reads, transitively
  uint64_t stored_bytes = 0;    // sum of the sources' blob sizes
  uint64_t dense_bytes = 0;     // its output's elements times the output type's size (0 if unknown)
  std::string compression;      // "none", or the constexpr op types on the way, "+"-joined
  int first_position = -1;      // its first compute consumer; -1 if only block outputs read it
};

struct MilProgramIndex {
  std::string function = "main";
  std::string opset;
  const coreml::Block* block = nullptr;
  std::vector<MilOpInfo> ops;              // the block's ops, in order
  std::vector<size_t> compute_ops;         // op index per position
  std::map<std::string, size_t> producer;  // value -> op index
  std::set<std::string> function_inputs;
  std::vector<std::string> function_input_order;
  std::map<std::string, const coreml::ValueType*> types;  // every value's declared type
  std::vector<MilWeight> weights;                         // in op order of their `op`
  std::map<size_t, size_t> weight_of_op;                  // const/constexpr op -> its weight, when it is one
};

// Indexes `package`'s main function, opening the weight files it refers to.
absl::StatusOr<MilProgramIndex> IndexMilProgram(CoreMlPackage& package);

// The checks a written chunk passes before it is published, on the model as read back: a main
// function whose ops read only its inputs and earlier ops' outputs, block outputs that exist, the
// description's inputs and outputs naming the function's inputs and the block's outputs in order,
// and every blob reference on a record of `weight_files` (by file name's last part: record offset
// -> blob) of the dtype its value declares. DATA_LOSS VERIFY_MISMATCH naming what is wrong.
absl::Status VerifyMilProgram(const coreml::Model& model,
                              const std::map<std::string, std::map<uint64_t, MilBlob>>& weight_files);

// The element count of a tensor type whose dimensions are all constant; nullopt otherwise.
std::optional<uint64_t> MilElementCount(const coreml::ValueType& type);

// Bytes per element of a MIL DataType (sub-byte types: their bits / 8), 0 when unknown.
double MilDataTypeBytes(int data_type);
// "fp16", "int8", "uint4", ... for a MIL DataType.
std::string MilDataTypeName(int data_type);
// The shape of a tensor type ("?" for an unknown dimension), e.g. "[1, 64, ?]".
std::string MilShapeString(const coreml::ValueType& type);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_MIL_PROGRAM_H_
