#include "workers/formats/torch_pickle.h"

#include <map>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/formats/pickle_machine.h"
#include "workers/formats/tensor_name.h"

namespace modelsmith {
namespace {

using Kind = PickleKind;
using Value = PickleValue;

// What an allowed global stands for.
enum class Global : uint8_t {
  kOrderedDict,
  kCounter,
  kParameter,
  kSize,
  kTensor,
  kDevice,
  kCodecsEncode,
  kBytearray,
  kSet,
  kComplex,
  kGetLayout,
  kDtype,
  kStorageType,
  kUntypedStorage,
  kTypedStorage,
  kTensorClass,
  kQScheme,
  kRebuildTensor,
  kRebuildTensorV2,
  kRebuildTensorV3,
  kRebuildParameter,
  kRebuildParameterWithState,
  kRebuildFromTypeV2,
  kUnsupportedRebuild,
};

struct GlobalInfo {
  Global kind;
  std::optional<DType> dtype;  // dtypes and typed storages we can represent
};

const std::map<std::string, GlobalInfo, std::less<>>& AllowedGlobals() {
  static const auto* const globals = [] {
    auto* m = new std::map<std::string, GlobalInfo, std::less<>>{
        {"collections.OrderedDict", {Global::kOrderedDict, {}}},
        {"collections.Counter", {Global::kCounter, {}}},
        {"torch.nn.parameter.Parameter", {Global::kParameter, {}}},
        {"torch.serialization._get_layout", {Global::kGetLayout, {}}},
        {"torch.Size", {Global::kSize, {}}},
        {"torch.Tensor", {Global::kTensor, {}}},
        {"torch.device", {Global::kDevice, {}}},
        {"_codecs.encode", {Global::kCodecsEncode, {}}},
        {"builtins.bytearray", {Global::kBytearray, {}}},
        {"builtins.set", {Global::kSet, {}}},
        {"builtins.complex", {Global::kComplex, {}}},
        {"torch.UntypedStorage", {Global::kUntypedStorage, {}}},
        {"torch.storage.UntypedStorage", {Global::kUntypedStorage, {}}},
        {"torch.TypedStorage", {Global::kTypedStorage, {}}},
        {"torch.storage.TypedStorage", {Global::kTypedStorage, {}}},
        {"torch._utils._rebuild_tensor", {Global::kRebuildTensor, {}}},
        {"torch._utils._rebuild_tensor_v2", {Global::kRebuildTensorV2, {}}},
        {"torch._utils._rebuild_tensor_v3", {Global::kRebuildTensorV3, {}}},
        {"torch._utils._rebuild_parameter", {Global::kRebuildParameter, {}}},
        {"torch._utils._rebuild_parameter_with_state", {Global::kRebuildParameterWithState, {}}},
        {"torch._tensor._rebuild_from_type_v2", {Global::kRebuildFromTypeV2, {}}},
    };
    for (const char* f :
         {"_rebuild_qtensor", "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
          "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"}) {
      m->emplace(absl::StrCat("torch._utils.", f), GlobalInfo{Global::kUnsupportedRebuild, {}});
    }
    // Dtypes (str(torch.<dtype>)): the ones a tensor here can have, then the rest torch allows.
    const std::pair<const char*, DType> dtypes[] = {
        {"float32", DType::kF32},
        {"float64", DType::kF64},
        {"float16", DType::kF16},
        {"bfloat16", DType::kBF16},
        {"int8", DType::kI8},
        {"uint8", DType::kU8},
        {"int16", DType::kI16},
        {"int32", DType::kI32},
        {"int64", DType::kI64},
        {"bool", DType::kBool},
        {"complex64", DType::kC64},
        {"float8_e4m3fn", DType::kF8E4M3},
        {"float8_e5m2", DType::kF8E5M2},
        {"float8_e4m3fnuz", DType::kF8E4M3Fnuz},
        {"float8_e5m2fnuz", DType::kF8E5M2Fnuz},
        {"float8_e8m0fnu", DType::kF8E8M0},
        {"uint16", DType::kU16},
        {"uint32", DType::kU32},
        {"uint64", DType::kU64},
    };
    for (const auto& [name, dtype] : dtypes)
      m->emplace(absl::StrCat("torch.", name), GlobalInfo{Global::kDtype, dtype});
    for (const char* name : {"complex128",
                             "complex32",
                             "qint8",
                             "quint8",
                             "qint32",
                             "quint4x2",
                             "quint2x4",
                             "bits1x8",
                             "bits2x4",
                             "bits4x2",
                             "bits8",
                             "bits16",
                             "float4_e2m1fn_x2",
                             "uint1",
                             "uint2",
                             "uint3",
                             "uint4",
                             "uint5",
                             "uint6",
                             "uint7",
                             "int1",
                             "int2",
                             "int3",
                             "int4",
                             "int5",
                             "int6",
                             "int7"}) {
      m->emplace(absl::StrCat("torch.", name), GlobalInfo{Global::kDtype, std::nullopt});
    }
    // Legacy typed storages and tensor classes (torch and torch.cuda).
    const std::pair<const char*, std::optional<DType>> typed[] = {
        {"Double", DType::kF64},    {"Float", DType::kF32},        {"Half", DType::kF16},
        {"BFloat16", DType::kBF16}, {"Long", DType::kI64},         {"Int", DType::kI32},
        {"Short", DType::kI16},     {"Char", DType::kI8},          {"Byte", DType::kU8},
        {"Bool", DType::kBool},     {"ComplexFloat", DType::kC64}, {"ComplexDouble", std::nullopt},
        {"QUInt8", std::nullopt},   {"QInt8", std::nullopt},       {"QInt32", std::nullopt},
        {"QUInt4x2", std::nullopt}, {"QUInt2x4", std::nullopt},
    };
    for (const char* module : {"torch", "torch.cuda"}) {
      for (const auto& [name, dtype] : typed) {
        m->emplace(absl::StrCat(module, ".", name, "Storage"), GlobalInfo{Global::kStorageType, dtype});
        m->emplace(absl::StrCat(module, ".", name, "Tensor"), GlobalInfo{Global::kTensorClass, {}});
      }
    }
    for (const char* q : {"per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
                          "per_channel_affine_float_qparams"}) {
      m->emplace(absl::StrCat("torch.", q), GlobalInfo{Global::kQScheme, {}});
    }
    return m;
  }();
  return *globals;
}

// What a global value stands for (a default GlobalInfo for any other value).
GlobalInfo InfoOf(const Value& v) {
  return v.host_data == nullptr ? GlobalInfo{} : *static_cast<const GlobalInfo*>(v.host_data);
}

bool IsDictKind(Kind k) { return IsPickleDict(k); }
const char* KindName(Kind k) { return PickleKindName(k); }

// The torch side of the machine: what the allowed globals are and what the calls torch allows
// build (storages, tensor views, dicts), then the state dict flattened into named tensors.
class TorchReader final : public PickleMachine::Host {
 public:
  TorchReader(absl::string_view data, absl::string_view file)
      : machine_(data, file, kTorchPickleMaxValues), file_(file) {}

  absl::StatusOr<TorchPickle> Run() {
    absl::StatusOr<uint32_t> root = machine_.Run(*this);
    if (!root.ok()) return root.status();
    return Collect(*root);
  }

  absl::StatusOr<uint32_t> Global(PickleMachine&, const std::string& full) override {
    auto it = AllowedGlobals().find(full);
    if (it == AllowedGlobals().end()) {
      return Error("TORCH_PICKLE_FORBIDDEN_GLOBAL",
                   absl::StrCat("global '", full,
                                "' is not in torch's weights_only allow-list; the pickle is refused, never run"));
    }
    return New(Value{.kind = Kind::kGlobal, .text = full, .host_data = &it->second});
  }

  absl::StatusOr<uint32_t> Reduce(PickleMachine&, uint32_t func, uint32_t args) override { return Call(func, args); }

  // ('storage', storage_type, key, location, numel) -> a storage, one per key.
  absl::StatusOr<uint32_t> PersistentLoad(PickleMachine&, uint32_t pid) override {
    const Value& id = values_[pid];
    if (id.kind != Kind::kTuple) {
      return Malformed(absl::StrCat("persistent id is a ", KindName(id.kind), ", not a ('storage', ...) tuple"));
    }
    if (id.items.empty() || values_[id.items[0]].kind != Kind::kStr || values_[id.items[0]].text != "storage") {
      return Malformed("only persistent ids of storages are allowed");
    }
    if (id.items.size() != 5) {
      return Unsupported(absl::StrCat("storage persistent id with ", id.items.size(), " fields (expected 5)"));
    }
    const Value& type = values_[id.items[1]];
    const Value& key = values_[id.items[2]];
    const Value& location = values_[id.items[3]];
    const Value& numel = values_[id.items[4]];
    const bool typed = type.kind == Kind::kGlobal && InfoOf(type).kind == Global::kStorageType;
    const bool untyped = type.kind == Kind::kGlobal && InfoOf(type).kind == Global::kUntypedStorage;
    if (!typed && !untyped) return Malformed("the storage type is not a storage class");
    if (typed && !InfoOf(type).dtype) return Unsupported(absl::StrCat("storage type '", type.text, "'"));
    if (key.kind != Kind::kStr || location.kind != Kind::kStr || numel.kind != Kind::kInt || numel.number < 0) {
      return Malformed("storage persistent id fields are not (str key, str location, int numel)");
    }
    TorchStorage storage{key.text, typed ? InfoOf(type).dtype : std::nullopt, location.text,
                         static_cast<uint64_t>(numel.number)};
    auto [it, inserted] = storage_by_key_.try_emplace(key.text, result_.storages.size());
    if (inserted) {
      result_.storages.push_back(std::move(storage));
    } else {
      const TorchStorage& first = result_.storages[it->second];
      if (first.dtype != storage.dtype || first.numel != storage.numel) {
        return Malformed(absl::StrCat("storage '", key.text, "' is described twice, differently"));
      }
    }
    return New(Value{.kind = Kind::kStorage, .number = static_cast<int64_t>(it->second)});
  }

  absl::StatusOr<uint32_t> NewObj(PickleMachine&, uint32_t cls_id, uint32_t args_id) override {
    const Value& cls = values_[cls_id];
    const Value& args = values_[args_id];
    if (cls.kind != Kind::kGlobal)
      return Error("TORCH_PICKLE_FORBIDDEN_CALL", "NEWOBJ on something that is not an allowed class");
    if (args.kind != Kind::kTuple) return Malformed("NEWOBJ arguments are not a tuple");
    switch (InfoOf(cls).kind) {
      case Global::kParameter:
        if (args.items.empty() || args.items.size() > 2 || values_[args.items[0]].kind != Kind::kTensor) {
          return Unsupported("Parameter built from something other than a tensor");
        }
        return args.items[0];
      case Global::kSize:
        return New(Value{.kind = Kind::kTuple,
                         .items = args.items.empty() ? std::vector<uint32_t>{} : values_[args.items[0]].items});
      case Global::kOrderedDict: return New(Value{.kind = Kind::kOrderedDict});
      case Global::kCounter: return New(Value{.kind = Kind::kCounter});
      case Global::kSet: return New(Value{.kind = Kind::kSet});
      default: return Unsupported(absl::StrCat("NEWOBJ of '", cls.text, "'"));
    }
  }

  absl::StatusOr<uint32_t> Build(PickleMachine&, uint32_t inst_id, uint32_t state_id) override {
    const Value& inst = values_[inst_id];
    const Value& state = values_[state_id];
    switch (inst.kind) {
      case Kind::kTensor:
        // Tensor.set_(storage, offset, size, stride) for legacy pickles; a dict of attributes
        // (or nothing) otherwise, which changes no data.
        if (state.kind == Kind::kTuple && state.items.size() == 4) {
          const std::vector<uint32_t> s = state.items;
          return MakeTensor(s[0], s[1], s[2], s[3], std::nullopt);
        }
        if (IsDictKind(state.kind) || state.kind == Kind::kNone ||
            (state.kind == Kind::kTuple && state.items.empty())) {
          return inst_id;
        }
        return Unsupported(absl::StrCat("BUILD of a tensor with a ", KindName(state.kind), " state"));
      case Kind::kOrderedDict:
      case Kind::kCounter:
        // __dict__.update(state): attributes such as _metadata, not entries.
        if (!IsDictKind(state.kind)) return Malformed("BUILD of an OrderedDict with a state that is not a dict");
        return inst_id;
      default:
        return Error(
            "TORCH_PICKLE_FORBIDDEN_CALL",
            absl::StrCat("BUILD of a ", KindName(inst.kind), " (only Tensor, Parameter and OrderedDict may be built)"));
    }
  }

 private:
  // The machine's values, read through the names the rest of this class uses.
  struct Values {
    const PickleMachine& machine;
    const Value& operator[](uint32_t id) const { return machine.value(id); }
  };
  absl::StatusOr<uint32_t> New(Value v) { return machine_.New(std::move(v)); }
  absl::Status Error(absl::string_view reason, absl::string_view message) const {
    return machine_.Error(reason, message);
  }
  absl::Status Malformed(absl::string_view message) const { return machine_.Malformed(message); }
  absl::Status Unsupported(absl::string_view message) const { return machine_.Unsupported(message); }

  absl::StatusOr<std::vector<uint64_t>> Dims(uint32_t id, absl::string_view what) const {
    const Value& v = values_[id];
    if (v.kind != Kind::kTuple && v.kind != Kind::kList) return Malformed(absl::StrCat(what, " is not a tuple"));
    if (v.items.size() > 64) return Malformed(absl::StrCat(what, " has more than 64 dimensions"));
    std::vector<uint64_t> dims;
    for (uint32_t item : v.items) {
      const Value& d = values_[item];
      if (d.kind != Kind::kInt || d.number < 0)
        return Malformed(absl::StrCat(what, " holds something other than a non-negative int"));
      dims.push_back(static_cast<uint64_t>(d.number));
    }
    return dims;
  }

  // A tensor viewing `storage`; checks the view against the storage's extent.
  absl::StatusOr<uint32_t> MakeTensor(uint32_t storage_id, uint32_t offset_id, uint32_t size_id, uint32_t stride_id,
                                      std::optional<uint32_t> dtype_id) {
    const Value& sv = values_[storage_id];
    if (sv.kind != Kind::kStorage) return Malformed("a tensor is rebuilt from something that is not a storage");
    const TorchStorage& storage = result_.storages[sv.number];
    std::optional<DType> dtype = storage.dtype;
    if (dtype_id) {
      const Value& d = values_[*dtype_id];
      if (d.kind != Kind::kGlobal || InfoOf(d).kind != Global::kDtype)
        return Malformed("the dtype argument is not a dtype");
      if (!InfoOf(d).dtype) return Unsupported(absl::StrCat("tensors of dtype '", d.text, "'"));
      if (storage.dtype && storage.dtype != InfoOf(d).dtype)
        return Malformed("the dtype disagrees with the storage type");
      dtype = InfoOf(d).dtype;
    }
    if (!dtype) return Malformed("an untyped storage is rebuilt without a dtype");
    const Value& offset = values_[offset_id];
    if (offset.kind != Kind::kInt || offset.number < 0)
      return Malformed("the storage offset is not a non-negative int");
    absl::StatusOr<std::vector<uint64_t>> shape = Dims(size_id, "the size");
    if (!shape.ok()) return shape.status();
    absl::StatusOr<std::vector<uint64_t>> strides = Dims(stride_id, "the stride");
    if (!strides.ok()) return strides.status();
    if (shape->size() != strides->size()) return Malformed("size and stride have different lengths");
    const uint64_t bytes = DTypeBits(*dtype) / 8;
    const uint64_t storage_elements = storage.dtype ? storage.numel : storage.numel / bytes;
    // Largest element index the view touches, without overflow.
    bool empty = false;
    unsigned __int128 last = static_cast<uint64_t>(offset.number);
    for (size_t i = 0; i < shape->size(); ++i) {
      if ((*shape)[i] == 0)
        empty = true;
      else
        last += static_cast<unsigned __int128>((*shape)[i] - 1) * (*strides)[i];
    }
    if (!empty && last >= storage_elements) {
      return Malformed(absl::StrCat("a tensor view reaches element ",
                                    static_cast<uint64_t>(std::min<unsigned __int128>(last, UINT64_MAX)),
                                    " of storage '", storage.key, "', which has ", storage_elements));
    }
    TorchTensor t;
    t.storage = static_cast<size_t>(sv.number);
    t.dtype = *dtype;
    t.storage_offset = static_cast<uint64_t>(offset.number);
    t.shape = *std::move(shape);
    t.strides = *std::move(strides);
    tensors_.push_back(std::move(t));
    return New(Value{.kind = Kind::kTensor, .number = static_cast<int64_t>(tensors_.size() - 1)});
  }

  // What calling the allowed global `func` on `args` (a tuple) gives.
  absl::StatusOr<uint32_t> Call(uint32_t func_id, uint32_t args_id) {
    const Value& func = values_[func_id];
    if (func.kind != Kind::kGlobal) {
      return Error("TORCH_PICKLE_FORBIDDEN_CALL",
                   absl::StrCat("REDUCE calls a ", KindName(func.kind), ", not an allowed global"));
    }
    const Value& args_value = values_[args_id];
    if (args_value.kind != Kind::kTuple)
      return Malformed(absl::StrCat("the arguments of '", func.text, "' are not a tuple"));
    const std::vector<uint32_t> args = args_value.items;
    auto arity = [&](size_t lo, size_t hi) -> absl::Status {
      if (args.size() < lo || args.size() > hi) {
        return Malformed(absl::StrCat("'", func.text, "' called with ", args.size(), " arguments"));
      }
      return absl::OkStatus();
    };
    switch (InfoOf(func).kind) {
      case Global::kOrderedDict:
      case Global::kCounter:
        if (!args.empty()) return Unsupported(absl::StrCat("'", func.text, "' built from arguments"));
        return New(Value{.kind = InfoOf(func).kind == Global::kOrderedDict ? Kind::kOrderedDict : Kind::kCounter});
      case Global::kSize: {
        if (absl::Status s = arity(1, 1); !s.ok()) return s;
        if (absl::StatusOr<std::vector<uint64_t>> d = Dims(args[0], "torch.Size"); !d.ok()) return d.status();
        return New(Value{.kind = Kind::kTuple, .items = values_[args[0]].items});
      }
      case Global::kDevice: {
        if (absl::Status s = arity(1, 2); !s.ok()) return s;
        if (values_[args[0]].kind != Kind::kStr) return Malformed("torch.device of something that is not a string");
        return New(Value{.kind = Kind::kDevice, .text = values_[args[0]].text});
      }
      case Global::kCodecsEncode: {
        if (absl::Status s = arity(2, 2); !s.ok()) return s;
        const Value& text = values_[args[0]];
        const Value& encoding = values_[args[1]];
        if (text.kind != Kind::kStr || encoding.kind != Kind::kStr) return Malformed("_codecs.encode of non-strings");
        if (encoding.text == "utf-8" || encoding.text == "utf8")
          return New(Value{.kind = Kind::kBytes, .text = text.text});
        if (encoding.text != "latin1" && encoding.text != "latin-1") {
          return Unsupported(absl::StrCat("_codecs.encode to '", encoding.text, "'"));
        }
        std::string bytes;
        for (size_t i = 0; i < text.text.size(); ++i) {  // valid UTF-8; latin-1 holds code points < 256
          const unsigned char c = text.text[i];
          if (c < 0x80)
            bytes.push_back(static_cast<char>(c));
          else if ((c & 0xE0) == 0xC0 && c <= 0xC3)
            bytes.push_back(static_cast<char>(((c & 0x1F) << 6) | (text.text[++i] & 0x3F)));
          else
            return Malformed("_codecs.encode: a character outside latin-1");
        }
        return New(Value{.kind = Kind::kBytes, .text = std::move(bytes)});
      }
      case Global::kBytearray: {
        if (absl::Status s = arity(0, 1); !s.ok()) return s;
        if (args.empty()) return New(Value{.kind = Kind::kBytes});
        if (values_[args[0]].kind != Kind::kBytes) return Unsupported("bytearray of something that is not bytes");
        return New(Value{.kind = Kind::kBytes, .text = values_[args[0]].text});
      }
      case Global::kSet: {
        if (absl::Status s = arity(0, 1); !s.ok()) return s;
        if (args.empty()) return New(Value{.kind = Kind::kSet});
        const Value& from = values_[args[0]];
        if (from.kind != Kind::kList && from.kind != Kind::kTuple)
          return Unsupported("set of something that is not a list");
        return New(Value{.kind = Kind::kSet, .items = from.items});
      }
      case Global::kComplex: {
        if (absl::Status s = arity(0, 2); !s.ok()) return s;
        return New(Value{.kind = Kind::kComplex});
      }
      case Global::kRebuildTensor:
        if (absl::Status s = arity(4, 4); !s.ok()) return s;
        return MakeTensor(args[0], args[1], args[2], args[3], std::nullopt);
      case Global::kRebuildTensorV2:
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (absl::Status s = arity(6, 7); !s.ok()) return s;
        return MakeTensor(args[0], args[1], args[2], args[3], std::nullopt);
      case Global::kRebuildTensorV3:
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
        if (absl::Status s = arity(7, 8); !s.ok()) return s;
        return MakeTensor(args[0], args[1], args[2], args[3], args[6]);
      case Global::kRebuildParameter:
      case Global::kRebuildParameterWithState: {
        // (data, requires_grad, backward_hooks[, state]): the parameter is its data.
        if (absl::Status s = InfoOf(func).kind == Global::kRebuildParameter ? arity(3, 3) : arity(4, 4); !s.ok())
          return s;
        if (values_[args[0]].kind != Kind::kTensor)
          return Malformed("a parameter rebuilt from something that is not a tensor");
        return args[0];
      }
      case Global::kRebuildFromTypeV2: {
        // (func, new_type, args, state): func(*args), viewed as new_type.
        if (absl::Status s = arity(4, 4); !s.ok()) return s;
        const Value& new_type = values_[args[1]];
        if (new_type.kind != Kind::kGlobal ||
            (InfoOf(new_type).kind != Global::kTensor && InfoOf(new_type).kind != Global::kParameter)) {
          return Unsupported("a tensor subclass other than Tensor or Parameter");
        }
        return Call(args[0], args[2]);
      }
      case Global::kParameter:
      case Global::kTensor:
      case Global::kTensorClass:
      case Global::kUnsupportedRebuild:
      case Global::kGetLayout:
        return Unsupported(
            absl::StrCat("'", func.text, "' (allowed by torch, but it builds tensors this reader cannot represent)"));
      case Global::kDtype:
      case Global::kStorageType:
      case Global::kUntypedStorage:
      case Global::kTypedStorage:
      case Global::kQScheme:
        return Error("TORCH_PICKLE_FORBIDDEN_CALL", absl::StrCat("'", func.text, "' is not callable"));
    }
    return Malformed("unknown global");
  }

  // Flattens `dict` into named tensors: string keys, nested dicts joined with '.', a later
  // assignment to a key replacing the earlier value in the earlier position (Python's dict).
  absl::Status Flatten(uint32_t dict_id, const std::string& prefix, int depth, std::unordered_set<uint32_t>& open) {
    if (depth > 64) return Malformed("dicts nested more than 64 deep");
    if (!open.insert(dict_id).second) return Malformed("a dict contains itself");
    const Value& dict = values_[dict_id];
    std::vector<std::string> order;
    std::unordered_map<std::string, uint32_t> latest;
    for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
      const Value& key = values_[dict.items[i]];
      if (key.kind != Kind::kStr) {
        result_.skipped.push_back(absl::StrCat(prefix, "<", KindName(key.kind), " key>"));
        continue;
      }
      auto [it, inserted] = latest.try_emplace(key.text, dict.items[i + 1]);
      if (inserted)
        order.push_back(key.text);
      else
        it->second = dict.items[i + 1];
    }
    for (const std::string& key : order) {
      const std::string name = prefix + key;
      if (absl::Status s = CheckTensorNameLength(name, file_); !s.ok()) return s;
      const Value& v = values_[latest[key]];
      if (v.kind == Kind::kTensor) {
        TorchTensor t = tensors_[v.number];
        t.name = name;
        if (!names_.insert(name).second) return Malformed(absl::StrCat("two tensors are named '", name, "'"));
        result_.tensors.push_back(std::move(t));
      } else if (IsDictKind(v.kind)) {
        if (absl::Status s = Flatten(latest[key], name + ".", depth + 1, open); !s.ok()) return s;
      } else {
        result_.skipped.push_back(name);
      }
    }
    open.erase(dict_id);
    return absl::OkStatus();
  }

  absl::StatusOr<TorchPickle> Collect(uint32_t root_id) {
    const Value* root = &values_[root_id];
    if (!IsDictKind(root->kind)) {
      return Unsupported(absl::StrCat("the checkpoint holds a ", KindName(root->kind), ", not a state dict"));
    }
    for (size_t i = 0; i + 1 < root->items.size(); i += 2) {
      const Value& key = values_[root->items[i]];
      if (key.kind == Kind::kStr && key.text == "state_dict" && IsDictKind(values_[root->items[i + 1]].kind)) {
        root_id = root->items[i + 1];
        result_.from_state_dict_entry = true;
      }
    }
    std::unordered_set<uint32_t> open;
    if (absl::Status s = Flatten(root_id, "", 0, open); !s.ok()) return s;
    result_.protocol = machine_.protocol();
    return std::move(result_);
  }

  PickleMachine machine_;
  absl::string_view file_;
  Values values_{machine_};
  std::unordered_map<std::string, size_t> storage_by_key_;
  std::vector<TorchTensor> tensors_;  // every tensor built, named or not
  std::unordered_set<std::string> names_;
  TorchPickle result_;
};

}  // namespace

absl::StatusOr<TorchPickle> ReadTorchPickle(absl::string_view pickle, absl::string_view file) {
  return TorchReader(pickle, file).Run();
}

}  // namespace modelsmith
