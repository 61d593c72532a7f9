// PickleMachine: a restricted pickle virtual machine. It interprets the opcodes torch's
// weights_only unpickler accepts (torch/_weights_only_unpickler.py; formats.md §3) over an arena
// of plain values, and never imports, calls or executes anything: what a GLOBAL names and what
// REDUCE, NEWOBJ, BUILD and BINPERSID produce is decided by a Host (the torch checkpoint reader,
// torch_pickle.h), which models the few calls it allows.
//
// Opcodes: PROTO STOP MARK GLOBAL NEWOBJ REDUCE BUILD APPEND APPENDS SETITEM SETITEMS TUPLE
// TUPLE1-3 NONE NEWFALSE NEWTRUE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT EMPTY_SET BININT BININT1
// BININT2 LONG1 BINFLOAT BINUNICODE SHORT_BINSTRING BINPERSID BINGET LONG_BINGET BINPUT
// LONG_BINPUT; any other (FRAME, STACK_GLOBAL, MEMOIZE, INST, OBJ, ...) is refused with its name
// and byte position. GLOBAL applies the protocol-2 module renames (__builtin__ -> builtins,
// copy_reg -> copyreg) and always refuses sys, os, posix and nt before the host is asked.
//
// Values live in an arena and containers hold indices into it, so memo sharing and even cycles
// are plain indices: nothing owns anything and nothing recurses on destruction.
//
// Errors: INVALID_ARGUMENT with reasons TORCH_PICKLE_FORBIDDEN_GLOBAL, _FORBIDDEN_OPCODE,
// _FORBIDDEN_CALL, _MALFORMED, _UNSUPPORTED, _TOO_LARGE and context {file, field: "byte N"}.
// Bounded: at most `max_values` values and memo entries.
#ifndef MODELSMITH_WORKERS_FORMATS_PICKLE_MACHINE_H_
#define MODELSMITH_WORKERS_FORMATS_PICKLE_MACHINE_H_

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modelsmith {

enum class PickleKind : uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,
  kFloat,
  kStr,
  kBytes,
  kTuple,
  kList,
  kDict,
  kOrderedDict,
  kCounter,
  kSet,
  kGlobal,
  kStorage,
  kTensor,
  kDevice,
  kComplex,
};

// dict, OrderedDict or Counter.
bool IsPickleDict(PickleKind kind);
// "dict", "tuple", ... for messages.
const char* PickleKindName(PickleKind kind);

struct PickleValue {
  PickleKind kind = PickleKind::kNone;
  int64_t number = 0;  // bool/int; the host's index of a storage or tensor
  double real = 0;
  std::string text;                 // str, bytes, global name, device
  std::vector<uint32_t> items;      // tuple/list/set elements; dict key,value pairs in insertion order
  const void* host_data = nullptr;  // what the host attached to a global
};

class PickleMachine {
 public:
  // What the pickle may reach beyond plain data. Each call returns the id of a value (made with
  // New, or an existing one) or an error made with the machine's Error helpers.
  class Host {
   public:
    virtual ~Host() = default;
    // GLOBAL `full_name` ("module.name", renames applied): the global value it stands for.
    virtual absl::StatusOr<uint32_t> Global(PickleMachine& machine, const std::string& full_name) = 0;
    // BINPERSID with the persistent id value `pid`.
    virtual absl::StatusOr<uint32_t> PersistentLoad(PickleMachine& machine, uint32_t pid) = 0;
    // REDUCE: `func`(*`args`).
    virtual absl::StatusOr<uint32_t> Reduce(PickleMachine& machine, uint32_t func, uint32_t args) = 0;
    // NEWOBJ: `cls`.__new__(`cls`, *`args`).
    virtual absl::StatusOr<uint32_t> NewObj(PickleMachine& machine, uint32_t cls, uint32_t args) = 0;
    // BUILD: `inst`.__setstate__(`state`); the value that stands where `inst` stood.
    virtual absl::StatusOr<uint32_t> Build(PickleMachine& machine, uint32_t inst, uint32_t state) = 0;
  };

  // `data` (the pickle's bytes) must outlive the machine; `file` names it in errors.
  PickleMachine(absl::string_view data, absl::string_view file, uint64_t max_values)
      : data_(data), file_(file), max_values_(max_values) {}

  // Runs to STOP; returns the id of the root value.
  absl::StatusOr<uint32_t> Run(Host& host);

  int protocol() const { return protocol_; }
  const PickleValue& value(uint32_t id) const { return values_[id]; }
  // A new value in the arena; TORCH_PICKLE_TOO_LARGE past `max_values`.
  absl::StatusOr<uint32_t> New(PickleValue v);

  // Errors at the opcode being run (after Run: past the last one).
  absl::Status Error(absl::string_view reason, absl::string_view message) const;
  absl::Status Malformed(absl::string_view message) const { return Error("TORCH_PICKLE_MALFORMED", message); }
  absl::Status Unsupported(absl::string_view message) const { return Error("TORCH_PICKLE_UNSUPPORTED", message); }

 private:
  absl::Status Push(PickleValue v);
  absl::StatusOr<absl::string_view> Take(size_t n);
  absl::StatusOr<std::string> Line();
  absl::StatusOr<uint32_t> Pop();
  absl::StatusOr<uint32_t*> Top();
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<std::vector<uint32_t>> PopMark();

  absl::Status OpLong1();
  absl::Status OpGlobal(Host& host);
  absl::Status OpAppend(bool many);
  absl::Status OpSetItem(bool many);

  absl::string_view data_;
  absl::string_view file_;
  const uint64_t max_values_;
  int protocol_ = -1;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::vector<PickleValue> values_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_PICKLE_MACHINE_H_
