// Streams one quantized weight of a layout plan into an output file: the data tensor chunk by
// chunk (about 4M elements in flight), then its companions (scales, absmax, maps, JSON), which
// are kept in memory until the data is written. Quality figures are gathered on the way.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_WEIGHT_WRITER_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_WEIGHT_WRITER_H_

#include "absl/status/status.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/quantize/layout_quantize_plan.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/quant/quality.h"
#include "workers/storage/object_store.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {

// REQUIRES: t.quantize. Appends exactly the planned bytes of t.outputs, in order.
absl::Status WriteQuantizedWeight(const LayoutSpec& spec, const LayoutTensorPlan& t, const RandomAccessObject& file,
                                  PipelinedWriter& out, ProgressTracker& tracker, RateLimiter& pace,
                                  const JobContext& context, QualityStats& quality);

// REQUIRES: t.reader and !t.quantize. Writes the weight read back from its quantized layout as
// floats of its original dtype (an excluded or unfit weight of a requantize job).
absl::Status WriteDequantizedWeight(const LayoutTensorPlan& t, const RandomAccessObject& file, PipelinedWriter& out,
                                    ProgressTracker& tracker, RateLimiter& pace, const JobContext& context,
                                    QualityStats& quality);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_WEIGHT_WRITER_H_
