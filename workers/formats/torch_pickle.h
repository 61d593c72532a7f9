// A restricted unpickler for the data.pkl of a torch.save checkpoint. It mirrors torch's
// weights_only=True unpickler (torch/_weights_only_unpickler.py; formats.md §3) and never calls,
// imports or executes anything: it builds descriptors of the tensors the pickle would rebuild.
//
// The opcodes are interpreted by PickleMachine (pickle_machine.h), exactly torch's set; this
// reader is its host: it decides what the globals stand for and what the allowed calls build.
// Globals: torch's default allow-list (collections.OrderedDict/Counter, torch.nn.parameter.
// Parameter, torch.Size, torch.Tensor, torch.device, _codecs.encode, builtins.bytearray/set/
// complex, torch.serialization._get_layout, every torch dtype, tensor class, storage class and
// qscheme, the torch._utils rebuild functions and torch._tensor._rebuild_from_type_v2), with the
// protocol-2 module renames (__builtin__ -> builtins, copy_reg -> copyreg); sys, os, posix and nt
// are always blocked. Any other global is refused, naming it and its byte position.
// Calls are modelled, not made: REDUCE/NEWOBJ/BUILD are accepted on the callables and targets
// torch accepts and produce the value torch would; allowed callables that rebuild tensors we
// cannot represent (quantized, sparse, meta, wrapper subclasses, numpy) are refused as
// unsupported, naming them.
//
// Errors: INVALID_ARGUMENT with reasons TORCH_PICKLE_FORBIDDEN_GLOBAL, _FORBIDDEN_OPCODE,
// _FORBIDDEN_CALL, _MALFORMED, _UNSUPPORTED, _TOO_LARGE, context {file, field: "byte N"}.
// Bounded: at most kTorchPickleMaxValues values, nesting up to 64 containers deep.
#ifndef MODELSMITH_WORKERS_FORMATS_TORCH_PICKLE_H_
#define MODELSMITH_WORKERS_FORMATS_TORCH_PICKLE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workers/tensor/dtype.h"

namespace modelsmith {

inline constexpr uint64_t kTorchPickleMaxValues = 4'000'000;

// A storage as its persistent id names it: ('storage', storage_type, key, location, numel).
struct TorchStorage {
  std::string key;  // the record "data/<key>"
  // The storage type's dtype; nullopt for torch.UntypedStorage (the tensor's dtype comes from
  // _rebuild_tensor_v3, and `numel` counts bytes).
  std::optional<DType> dtype;
  std::string location;  // "cpu", "cuda:0", ...
  uint64_t numel = 0;
};

// A tensor as a view of a storage, in elements of `dtype`.
struct TorchTensor {
  std::string name;    // the state-dict key ("a.b.weight"; nested dicts joined with '.')
  size_t storage = 0;  // index into TorchPickle::storages
  DType dtype = DType::kF32;
  uint64_t storage_offset = 0;
  std::vector<uint64_t> shape;
  std::vector<uint64_t> strides;
};

struct TorchPickle {
  int protocol = -1;
  std::vector<TorchStorage> storages;  // in order of first appearance
  std::vector<TorchTensor> tensors;    // in state-dict order
  // Entries that are not tensors (numbers, strings, lists, ...), by key: kept out of the output.
  std::vector<std::string> skipped;
  // True when the tensors came from the checkpoint's "state_dict" entry (Lightning-style).
  bool from_state_dict_entry = false;
};

// Parses `pickle` (the bytes of data.pkl) from `file` (for messages). The result's root must be
// a dict (dict, OrderedDict): when it has a "state_dict" dict entry, that entry is used, as the
// Hugging Face converter does; nested dicts give dotted names.
absl::StatusOr<TorchPickle> ReadTorchPickle(absl::string_view pickle, absl::string_view file);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_TORCH_PICKLE_H_
