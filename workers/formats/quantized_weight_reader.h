// QuantizedWeightReader: a quantized weight of a safetensors model (one QuantizedGroup) read back
// as the float weight it stands for, row by row, with the dequantizers of workers/quant:
//
//   bnb_int8        q * SCB / 127 (SCB read once)
//   bnb_nf4/fp4     quant_map[code] * absmax[block], with the stored quant map and the shape,
//                   dtype and block size of the quant_state JSON; nested absmax are expanded once
//   quanto_qint8    q * scale (per row), in the scale's dtype
//   quanto_qfloat8  fp8 * scale
//   quanto_qint4    (q - shift) * scale per group; the grouped layout ([numel / g, g]) does not
//                   record the weight's columns, so a weight whose group length is also a quanto
//                   group size (32, 64, 96, 128) needs its shape from a hint (a LoRA adapter's
//                   A and B give it), else it is FAILED_PRECONDITION
//   chatglm_*       q * weight_scale; the bits come from config.json's quantization_bit
//   fp8_e4m3/e5m2   the value itself
// The reader reads only the bytes of the rows asked for (plus the small scale tensors once), so a
// requantize job streams as any other. Thread-safe: ReadRows may run on several threads. A reader
// points into the model's tensor table and files: the ModelView may be moved, not destroyed.
#ifndef MODELSMITH_WORKERS_FORMATS_QUANTIZED_WEIGHT_READER_H_
#define MODELSMITH_WORKERS_FORMATS_QUANTIZED_WEIGHT_READER_H_

#include <map>
#include <memory>
#include <set>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/formats/model_view.h"
#include "workers/formats/quantized_layout.h"
#include "workers/quant/half.h"

namespace modelsmith {

class QuantizedWeightReader {
 public:
  virtual ~QuantizedWeightReader() = default;

  // FAILED_PRECONDITION naming the tensor when the layout cannot be read back (see above);
  // INVALID_ARGUMENT when its tensors contradict each other.
  static absl::StatusOr<std::unique_ptr<QuantizedWeightReader>> Open(const ModelView& model,
                                                                     const QuantizedGroup& group,
                                                                     std::optional<int> chatglm_bits,
                                                                     const std::vector<uint64_t>* shape_hint = nullptr);

  // The weight it stands for: "<module>.weight" (or the fp8 tensor's own name), its shape
  // (rows = shape[0], columns = the rest), and the float type it had before quantization.
  const std::string& name() const { return name_; }
  const std::vector<uint64_t>& shape() const { return shape_; }
  StoredFloat original_type() const { return original_; }
  const std::string& layout() const { return layout_; }
  uint64_t rows() const { return shape_.empty() ? 1 : shape_[0]; }
  uint64_t columns() const;

  // Rows [first, first + count) into `out` (count * columns() floats).
  virtual absl::Status ReadRows(uint64_t first, uint64_t count, float* out) const = 0;
  // Elements [first, first + count) of the flattened weight into `out`.
  absl::Status ReadElements(uint64_t first, uint64_t count, float* out) const;

 protected:
  std::string name_;
  std::vector<uint64_t> shape_;
  StoredFloat original_ = StoredFloat::kF16;
  std::string layout_;
};

// The quantized weights of a safetensors model opened for reading back, for a job that
// requantizes them: each group stands in the tensor list as one float tensor (`info_of`) at the
// place of its first tensor; its other tensors are skipped.
struct RequantizeInputs {
  std::vector<std::unique_ptr<QuantizedWeightReader>> readers;
  std::map<std::string, const QuantizedWeightReader*> group_of;  // every tensor of every group
  std::map<const QuantizedWeightReader*, std::unique_ptr<TensorInfo>> info_of;
  std::map<std::string, std::string> unreadable;  // module -> why (skip_unreadable only)

  // Called for the model's tensors in order: what to plan in place of `stored` — itself; a
  // group's stand-in float tensor at the group's first tensor (then *reader is set); or nullptr
  // for the group's other tensors, which are skipped.
  const TensorInfo* StandIn(const TensorInfo& stored, const QuantizedWeightReader** reader);

 private:
  std::set<const QuantizedWeightReader*> placed_;
};

// Nothing for a GGUF model (its types are per tensor) or one without quantized layouts.
// Otherwise FAILED_PRECONDITION (ALREADY_QUANTIZED) naming the first quantized module, unless
// `allow_requantize`; then the readers, or the error of the first that cannot be opened.
// `shape_hints`: the weight shape of a module ("model.layers.0.self_attn.q_proj") known from
// elsewhere, for layouts that do not record it (quanto qint4 with groups); ignored when it does
// not fit the stored group. With `skip_unreadable`, a group that cannot be read back
// (FAILED_PRECONDITION) is left out of the inputs and its reason kept in `unreadable`.
absl::StatusOr<RequantizeInputs> OpenRequantizeInputs(
    const ModelView& model, const std::optional<nlohmann::json>& config, bool allow_requantize,
    const std::map<std::string, std::vector<uint64_t>>& shape_hints = {}, bool skip_unreadable = false);

// FP8 E4M3 (the "fn" kind: no infinities, S.1111.111 is NaN) and E5M2 to FP32, exactly.
float Fp8E4M3ToFp32(uint8_t bits);
float Fp8E5M2ToFp32(uint8_t bits);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_QUANTIZED_WEIGHT_READER_H_
