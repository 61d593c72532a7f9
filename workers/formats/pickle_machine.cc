#include "workers/formats/pickle_machine.h"

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

bool ValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else
      return false;
    if (s.size() - i <= static_cast<size_t>(extra)) return false;
    for (int k = 1; k <= extra; ++k) {
      const unsigned char d = s[i + k];
      if ((d & 0xC0) != 0x80) return false;
      cp = cp << 6 | (d & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

std::string OpcodeName(uint8_t op) {
  // The opcodes torch refuses that a hostile or newer pickle is most likely to hold.
  static const std::map<uint8_t, const char*> names = {
      {0x95, "FRAME"},
      {0x93, "STACK_GLOBAL"},
      {0x94, "MEMOIZE"},
      {0x8c, "SHORT_BINUNICODE"},
      {'i', "INST"},
      {'o', "OBJ"},
      {'c', "GLOBAL"},
      {'P', "PERSID"},
      {'I', "INT"},
      {'L', "LONG"},
      {'F', "FLOAT"},
      {'S', "STRING"},
      {'V', "UNICODE"},
      {'T', "BINSTRING"},
      {'B', "BINBYTES"},
      {'C', "SHORT_BINBYTES"},
      {0x8e, "BINBYTES8"},
      {0x8d, "BINUNICODE8"},
      {0x96, "BYTEARRAY8"},
      {0x97, "NEXT_BUFFER"},
      {0x98, "READONLY_BUFFER"},
      {0x90, "ADDITEMS"},
      {0x91, "FROZENSET"},
      {0x92, "NEWOBJ_EX"},
      {0x82, "EXT1"},
      {0x83, "EXT2"},
      {0x84, "EXT4"},
      {0x8b, "LONG4"},
      {'0', "POP"},
      {'1', "POP_MARK"},
      {'2', "DUP"},
      {'l', "LIST"},
      {'d', "DICT"},
      {'g', "GET"},
      {'p', "PUT"},
  };
  auto it = names.find(op);
  return it == names.end() ? absl::StrFormat("0x%02x", op) : std::string(it->second);
}

}  // namespace

bool IsPickleDict(PickleKind k) {
  return k == PickleKind::kDict || k == PickleKind::kOrderedDict || k == PickleKind::kCounter;
}

const char* PickleKindName(PickleKind k) {
  switch (k) {
    case PickleKind::kNone: return "None";
    case PickleKind::kBool: return "bool";
    case PickleKind::kInt:
    case PickleKind::kBigInt: return "int";
    case PickleKind::kFloat: return "float";
    case PickleKind::kStr: return "str";
    case PickleKind::kBytes: return "bytes";
    case PickleKind::kTuple: return "tuple";
    case PickleKind::kList: return "list";
    case PickleKind::kDict: return "dict";
    case PickleKind::kOrderedDict: return "OrderedDict";
    case PickleKind::kCounter: return "Counter";
    case PickleKind::kSet: return "set";
    case PickleKind::kGlobal: return "global";
    case PickleKind::kStorage: return "storage";
    case PickleKind::kTensor: return "tensor";
    case PickleKind::kDevice: return "device";
    case PickleKind::kComplex: return "complex";
  }
  return "?";
}

absl::Status PickleMachine::Error(absl::string_view reason, absl::string_view message) const {
  return MakeError(absl::StatusCode::kInvalidArgument, reason,
                   absl::StrCat("'", file_, "' data.pkl at byte ", op_pos_, ": ", message),
                   {{"file", std::string(file_)}, {"field", absl::StrCat("byte ", op_pos_)}});
}

absl::StatusOr<uint32_t> PickleMachine::New(PickleValue v) {
  if (values_.size() >= max_values_) {
    return Error("TORCH_PICKLE_TOO_LARGE", absl::StrCat("more than ", max_values_, " values"));
  }
  values_.push_back(std::move(v));
  return static_cast<uint32_t>(values_.size() - 1);
}
absl::Status PickleMachine::Push(PickleValue v) {
  absl::StatusOr<uint32_t> id = New(std::move(v));
  if (!id.ok()) return id.status();
  stack_.push_back(*id);
  return absl::OkStatus();
}

// Bytes of the argument that follows the opcode.
absl::StatusOr<absl::string_view> PickleMachine::Take(size_t n) {
  if (data_.size() - pos_ < n) return Malformed("truncated argument");
  absl::string_view out = data_.substr(pos_, n);
  pos_ += n;
  return out;
}
absl::StatusOr<std::string> PickleMachine::Line() {
  const size_t end = data_.find('\n', pos_);
  if (end == absl::string_view::npos) return Malformed("GLOBAL without a newline");
  std::string line(data_.substr(pos_, end - pos_));
  pos_ = end + 1;
  return line;
}

absl::StatusOr<uint32_t> PickleMachine::Pop() {
  if (stack_.size() <= Floor()) return Malformed("stack underflow");
  const uint32_t v = stack_.back();
  stack_.pop_back();
  return v;
}
absl::StatusOr<uint32_t*> PickleMachine::Top() {
  if (stack_.size() <= Floor()) return Malformed("stack underflow");
  return &stack_.back();
}
absl::StatusOr<std::vector<uint32_t>> PickleMachine::PopMark() {
  if (marks_.empty()) return Malformed("no MARK to pop to");
  std::vector<uint32_t> items(stack_.begin() + static_cast<ptrdiff_t>(marks_.back()), stack_.end());
  stack_.resize(marks_.back());
  marks_.pop_back();
  return items;
}

absl::StatusOr<uint32_t> PickleMachine::Run(Host& host) {
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= data_.size()) return Malformed("ends before STOP");
    const uint8_t op = static_cast<uint8_t>(data_[pos_++]);
    absl::Status s;
    switch (op) {
      case 0x80: {  // PROTO
        absl::StatusOr<absl::string_view> b = Take(1);
        if (!b.ok()) return b.status();
        protocol_ = static_cast<uint8_t>((*b)[0]);
        break;
      }
      case '.': {  // STOP
        absl::StatusOr<uint32_t> root = Pop();
        if (!root.ok()) return root.status();
        return *root;
      }
      case '(': marks_.push_back(stack_.size()); break;
      case 'c': s = OpGlobal(host); break;
      case 0x81: {  // NEWOBJ
        absl::StatusOr<uint32_t> args = Pop();
        if (!args.ok()) return args.status();
        absl::StatusOr<uint32_t> cls = Pop();
        if (!cls.ok()) return cls.status();
        absl::StatusOr<uint32_t> made = host.NewObj(*this, *cls, *args);
        if (!made.ok()) return made.status();
        stack_.push_back(*made);
        break;
      }
      case 'R': {  // REDUCE
        absl::StatusOr<uint32_t> args = Pop();
        if (!args.ok()) return args.status();
        absl::StatusOr<uint32_t*> func = Top();
        if (!func.ok()) return func.status();
        absl::StatusOr<uint32_t> result = host.Reduce(*this, **func, *args);
        if (!result.ok()) return result.status();
        stack_.back() = *result;
        break;
      }
      case 'b': {  // BUILD
        absl::StatusOr<uint32_t> state = Pop();
        if (!state.ok()) return state.status();
        absl::StatusOr<uint32_t*> inst = Top();
        if (!inst.ok()) return inst.status();
        absl::StatusOr<uint32_t> built = host.Build(*this, **inst, *state);
        if (!built.ok()) return built.status();
        stack_.back() = *built;
        break;
      }
      case 'a':
      case 'e': s = OpAppend(op == 'e'); break;
      case 's':
      case 'u': s = OpSetItem(op == 'u'); break;
      case 't': {
        absl::StatusOr<std::vector<uint32_t>> items = PopMark();
        if (!items.ok()) return items.status();
        s = Push(PickleValue{.kind = PickleKind::kTuple, .items = *std::move(items)});
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84;
        if (stack_.size() < Floor() + n) return Malformed("stack underflow");
        std::vector<uint32_t> items(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        s = Push(PickleValue{.kind = PickleKind::kTuple, .items = std::move(items)});
        break;
      }
      case 'N': s = Push(PickleValue{.kind = PickleKind::kNone}); break;
      case 0x88: s = Push(PickleValue{.kind = PickleKind::kBool, .number = 1}); break;
      case 0x89: s = Push(PickleValue{.kind = PickleKind::kBool, .number = 0}); break;
      case ')': s = Push(PickleValue{.kind = PickleKind::kTuple}); break;
      case ']': s = Push(PickleValue{.kind = PickleKind::kList}); break;
      case '}': s = Push(PickleValue{.kind = PickleKind::kDict}); break;
      case 0x8f: s = Push(PickleValue{.kind = PickleKind::kSet}); break;
      case 'J':
      case 'K':
      case 'M': {
        const size_t n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
        absl::StatusOr<absl::string_view> b = Take(n);
        if (!b.ok()) return b.status();
        uint32_t raw = 0;
        for (size_t i = 0; i < n; ++i) raw |= uint32_t(static_cast<uint8_t>((*b)[i])) << (8 * i);
        const int64_t v = op == 'J' ? static_cast<int64_t>(static_cast<int32_t>(raw)) : static_cast<int64_t>(raw);
        s = Push(PickleValue{.kind = PickleKind::kInt, .number = v});
        break;
      }
      case 0x8a: s = OpLong1(); break;
      case 'G': {  // BINFLOAT, big-endian
        absl::StatusOr<absl::string_view> b = Take(8);
        if (!b.ok()) return b.status();
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = bits << 8 | static_cast<uint8_t>((*b)[i]);
        double d;
        std::memcpy(&d, &bits, 8);
        s = Push(PickleValue{.kind = PickleKind::kFloat, .real = d});
        break;
      }
      case 'X':
      case 'U': {  // BINUNICODE (u32 length), SHORT_BINSTRING (u8 length, decoded as UTF-8)
        absl::StatusOr<absl::string_view> len = Take(op == 'X' ? 4 : 1);
        if (!len.ok()) return len.status();
        uint32_t n = 0;
        for (size_t i = 0; i < len->size(); ++i) n |= uint32_t(static_cast<uint8_t>((*len)[i])) << (8 * i);
        absl::StatusOr<absl::string_view> text = Take(n);
        if (!text.ok()) return text.status();
        if (!ValidUtf8(*text)) return Malformed("a string is not valid UTF-8");
        s = Push(PickleValue{.kind = PickleKind::kStr, .text = std::string(*text)});
        break;
      }
      case 'Q': {  // BINPERSID
        absl::StatusOr<uint32_t> pid = Pop();
        if (!pid.ok()) return pid.status();
        absl::StatusOr<uint32_t> loaded = host.PersistentLoad(*this, *pid);
        if (!loaded.ok()) return loaded.status();
        stack_.push_back(*loaded);
        break;
      }
      case 'h':
      case 'j': {  // BINGET, LONG_BINGET
        absl::StatusOr<absl::string_view> b = Take(op == 'h' ? 1 : 4);
        if (!b.ok()) return b.status();
        uint32_t idx = 0;
        for (size_t i = 0; i < b->size(); ++i) idx |= uint32_t(static_cast<uint8_t>((*b)[i])) << (8 * i);
        auto it = memo_.find(idx);
        if (it == memo_.end()) return Malformed(absl::StrCat("memo entry ", idx, " was never stored"));
        stack_.push_back(it->second);
        break;
      }
      case 'q':
      case 'r': {  // BINPUT, LONG_BINPUT
        absl::StatusOr<absl::string_view> b = Take(op == 'q' ? 1 : 4);
        if (!b.ok()) return b.status();
        uint32_t idx = 0;
        for (size_t i = 0; i < b->size(); ++i) idx |= uint32_t(static_cast<uint8_t>((*b)[i])) << (8 * i);
        absl::StatusOr<uint32_t*> top = Top();
        if (!top.ok()) return top.status();
        if (memo_.size() >= max_values_ && memo_.count(idx) == 0) {
          return Error("TORCH_PICKLE_TOO_LARGE", "too many memo entries");
        }
        memo_[idx] = **top;
        break;
      }
      default:
        return Error(
            "TORCH_PICKLE_FORBIDDEN_OPCODE",
            absl::StrCat("opcode ", OpcodeName(op), " is not allowed (torch's weights_only unpickler refuses it)"));
    }
    if (!s.ok()) return s;
  }
}

absl::Status PickleMachine::OpLong1() {
  absl::StatusOr<absl::string_view> len = Take(1);
  if (!len.ok()) return len.status();
  absl::StatusOr<absl::string_view> b = Take(static_cast<uint8_t>((*len)[0]));
  if (!b.ok()) return b.status();
  if (b->size() > 8) return Push(PickleValue{.kind = PickleKind::kBigInt});  // usable as nothing we need
  uint64_t raw = 0;
  for (size_t i = 0; i < b->size(); ++i) raw |= uint64_t(static_cast<uint8_t>((*b)[i])) << (8 * i);
  if (!b->empty() && b->size() < 8 && (static_cast<uint8_t>(b->back()) & 0x80)) raw |= ~uint64_t{0} << (8 * b->size());
  return Push(PickleValue{.kind = PickleKind::kInt, .number = static_cast<int64_t>(raw)});
}

absl::Status PickleMachine::OpGlobal(Host& host) {
  absl::StatusOr<std::string> module = Line();
  if (!module.ok()) return module.status();
  absl::StatusOr<std::string> name = Line();
  if (!name.ok()) return name.status();
  // Python 3's protocol-2 pickler writes Python 2 module names; the unpickler maps them back.
  if (*module == "__builtin__") *module = "builtins";
  if (*module == "copy_reg") *module = "copyreg";
  const std::string full = absl::StrCat(*module, ".", *name);
  for (const char* blocked : {"sys", "os", "posix", "nt"}) {
    if (*module == blocked) {
      return Error("TORCH_PICKLE_FORBIDDEN_GLOBAL",
                   absl::StrCat("global '", full, "' refused: module '", blocked, "' is always blocked"));
    }
  }
  absl::StatusOr<uint32_t> global = host.Global(*this, full);
  if (!global.ok()) return global.status();
  stack_.push_back(*global);
  return absl::OkStatus();
}

absl::Status PickleMachine::OpAppend(bool many) {
  std::vector<uint32_t> items;
  if (many) {
    absl::StatusOr<std::vector<uint32_t>> popped = PopMark();
    if (!popped.ok()) return popped.status();
    items = *std::move(popped);
  } else {
    absl::StatusOr<uint32_t> item = Pop();
    if (!item.ok()) return item.status();
    items.push_back(*item);
  }
  absl::StatusOr<uint32_t*> target = Top();
  if (!target.ok()) return target.status();
  PickleValue& list = values_[**target];
  if (list.kind != PickleKind::kList)
    return Malformed(absl::StrCat("can only append to lists, not to a ", PickleKindName(list.kind)));
  list.items.insert(list.items.end(), items.begin(), items.end());
  return absl::OkStatus();
}

absl::Status PickleMachine::OpSetItem(bool many) {
  std::vector<uint32_t> items;
  if (many) {
    absl::StatusOr<std::vector<uint32_t>> popped = PopMark();
    if (!popped.ok()) return popped.status();
    items = *std::move(popped);
    if (items.size() % 2 != 0) return Malformed("SETITEMS with an odd number of items");
  } else {
    absl::StatusOr<uint32_t> v = Pop();
    if (!v.ok()) return v.status();
    absl::StatusOr<uint32_t> k = Pop();
    if (!k.ok()) return k.status();
    items = {*k, *v};
  }
  absl::StatusOr<uint32_t*> target = Top();
  if (!target.ok()) return target.status();
  PickleValue& dict = values_[**target];
  if (!IsPickleDict(dict.kind)) {
    return Malformed(
        absl::StrCat("can only set items of dict, OrderedDict or Counter, not of a ", PickleKindName(dict.kind)));
  }
  dict.items.insert(dict.items.end(), items.begin(), items.end());
  return absl::OkStatus();
}

}  // namespace modelsmith
