// A fixture that runs quantize jobs in-process: outputs under a temporary directory, every path
// allowed, warnings recorded.
#ifndef MODELSMITH_TESTS_SUPPORT_QUANTIZE_JOB_FIXTURE_H_
#define MODELSMITH_TESTS_SUPPORT_QUANTIZE_JOB_FIXTURE_H_

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/recording_context.h"
#include "tests/support/temp_dir.h"
#include "workers/jobs/job_kinds.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

class QuantizeJobFixture : public ::testing::Test {
 protected:
  absl::StatusOr<v1::JobResult> Run(const v1::QuantizeSpec& spec) {
    JobRun run;
    run.job_id = "job-test";
    *run.spec.mutable_quantize() = spec;
    run.router = &router_;
    return RunJob(run, context_);
  }
  // `output` is a name in the temporary directory.
  v1::QuantizeSpec Spec(const std::string& input, const std::string& output, const std::string& scheme) {
    v1::QuantizeSpec spec;
    spec.set_input(input);
    spec.set_output(dir_.path() + "/" + output);
    spec.set_scheme(scheme);
    return spec;
  }
  std::vector<std::string> Codes() {
    std::vector<std::string> codes;
    for (const auto& [code, tensor] : context_.warnings()) codes.push_back(code);
    return codes;
  }

  TempDir dir_;
  StorageRouter router_{{}};
  RecordingContext context_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_QUANTIZE_JOB_FIXTURE_H_
