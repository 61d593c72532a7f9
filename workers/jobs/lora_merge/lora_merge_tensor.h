// One base tensor of a LoRA merge rewritten with its updates, streamed in row chunks:
// decode the stored rows to F32, add each adapter's update in order, encode once in the stored
// type. The bytes written have the tensor's stored size, so the file's header stays valid.
#ifndef MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_TENSOR_H_
#define MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_TENSOR_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/lora_merge/lora_merge_plan.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/quant/low_rank_update.h"
#include "workers/quant/quality.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {

struct MergedTensorFigures {
  double relative_update = 0;  // ||W' - W|| / ||W||, W the base as read, W' the exact F32 merge
  QualityStats written;        // W' against what was written (its rounding to the stored type)
};

// A quantized weight read back with its updates added: what the layout kernels requantize.
// ReadRows may run on several threads; it records each row's ||W||^2 and ||W' - W||^2, summed in
// row order by relative_update(), so the figure does not depend on the threads.
class MergedWeightReader final : public QuantizedWeightReader {
 public:
  MergedWeightReader(const QuantizedWeightReader& base, std::vector<LowRankUpdate> updates);
  absl::Status ReadRows(uint64_t first, uint64_t count, float* out) const override;
  double relative_update() const;

 private:
  const QuantizedWeightReader& base_;
  std::vector<LowRankUpdate> updates_;
  mutable std::vector<double> row_signal_, row_change_;  // per row; rows are disjoint across calls
};

// The tensors of a merged quantized group (t.reader set): read back, merged and quantized again
// with the base's layout settings; name -> bytes, exactly the base's names and sizes.
absl::StatusOr<std::map<std::string, std::string>> RequantizeMergedGroup(const MergeTensor& t,
                                                                         std::vector<LowRankUpdate> updates,
                                                                         const RandomAccessObject& file,
                                                                         RateLimiter& pace, const JobContext& context,
                                                                         MergedTensorFigures* figures);

// The updates of `t` in adapter order, with each module's A, B and DoRA magnitude read from its
// adapter file as F32 (B's rows, and the magnitudes, reordered to the stored row order of a
// permuted GGUF Q/K weight).
absl::StatusOr<std::vector<LowRankUpdate>> LoadUpdates(const MergeTensor& t);

// The bytes WriteMergedTensor appends: t.base->size_bytes (the stored type), or the rows in the
// float type of a dequantized weight.
uint64_t MergedTensorBytes(const MergeTensor& t);

// Appends MergedTensorBytes(t) to `out`: the merged tensor in its stored type, or for policy
// DEQUANTIZE (t.dequantize_to) in that float type, the rows read back through t.reader for a
// quantized group. Progress counts the stored bytes of t.base (not a group's: the job counts
// those).
absl::Status WriteMergedTensor(const MergeTensor& t, const std::vector<LowRankUpdate>& updates,
                               const RandomAccessObject& file, PipelinedWriter& out, ProgressTracker& tracker,
                               RateLimiter& pace, const JobContext& context, MergedTensorFigures* figures);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_TENSOR_H_
