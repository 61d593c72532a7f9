#include "workers/jobs/bisect/bisect_coreml_job.h"

#include <chrono>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/formats/coreml_package.h"
#include "workers/formats/mil_program.h"
#include "workers/jobs/bisect/bisect_plan.h"
#include "workers/jobs/bisect/coreml_bisect_plan.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/storage/checksum.h"
#include "workers/storage/pipelined_writer.h"
#include "workers/storage/uri.h"

namespace modelsmith {

struct CoreMlBisectJobPlan {
  Location location;
  std::unique_ptr<CoreMlPackage> package;
  MilProgramIndex index;  // points into *package
  CoreMlBisectPlan plan;
};

namespace {

using nlohmann::ordered_json;

constexpr uint64_t kCoreMlBaseMemoryBytes = 96 << 20;

absl::Status WithField(const absl::Status& s) { return WithReason(s, ReasonOf(s), {{"field", "bisect.input"}}); }

std::string Stem(const std::string& uri) {
  std::string name(BaseName(uri));
  return absl::EndsWith(name, ".mlpackage") ? name.substr(0, name.size() - 10) : name;
}

// A blob a chunk carries: where it comes from and where it goes.
struct ChunkBlob {
  const CoreMlWeightFile* source = nullptr;
  MilBlob blob;             // as in the source
  uint64_t new_record = 0;  // its record offset in the chunk's weight file
};

// Every blob-valued parameter of `op` and of its nested blocks' ops, in a fixed order (proto maps
// have none): attributes by key, then inputs by parameter and argument order.
void ForEachBlobValue(coreml::Operation& op, const std::function<void(coreml::Value&)>& visit) {
  std::vector<std::string> keys;
  for (auto& [key, value] : *op.mutable_attributes()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  for (const std::string& key : keys) {
    coreml::Value& value = (*op.mutable_attributes())[key];
    if (value.has_blob_file_value()) visit(value);
  }
  keys.clear();
  for (auto& [param, argument] : *op.mutable_inputs()) keys.push_back(param);
  std::sort(keys.begin(), keys.end());
  for (const std::string& param : keys) {
    for (auto& binding : *(*op.mutable_inputs())[param].mutable_arguments()) {
      if (binding.has_value() && binding.value().has_blob_file_value()) visit(*binding.mutable_value());
    }
  }
  for (coreml::Block& block : *op.mutable_blocks()) {
    for (coreml::Operation& inner : *block.mutable_operations()) ForEachBlobValue(inner, visit);
  }
}

// Rewrites `model`'s blob references to `file_ref` at their new offsets, collecting the blobs in
// the order first referred to.
absl::StatusOr<std::vector<ChunkBlob>> RelocateBlobs(coreml::Model& model, CoreMlPackage& package,
                                                     const std::string& file_ref) {
  std::vector<ChunkBlob> blobs;
  std::map<std::pair<std::string, uint64_t>, size_t> seen;
  std::vector<coreml::Value*> values;
  std::vector<size_t> value_blob;
  absl::Status status;
  coreml::Block& block =
      model.mutable_ml_program()->mutable_functions()->at("main").mutable_block_specializations()->begin()->second;
  for (coreml::Operation& op : *block.mutable_operations()) {
    ForEachBlobValue(op, [&](coreml::Value& value) {
      if (!status.ok()) return;
      const std::string file(BaseName(value.blob_file_value().file_name()));
      const uint64_t offset = value.blob_file_value().offset();
      auto [it, added] = seen.try_emplace({file, offset}, blobs.size());
      if (added) {
        absl::StatusOr<const CoreMlWeightFile*> source =
            package.WeightFile(value.blob_file_value().file_name(), "a chunk op");
        if (!source.ok()) {
          status = source.status();
          return;
        }
        absl::StatusOr<MilBlob> blob = (*source)->blobs.BlobAt(offset, "a chunk op");
        if (!blob.ok()) {
          status = blob.status();
          return;
        }
        blobs.push_back({*source, *blob, 0});
      }
      values.push_back(&value);
      value_blob.push_back(it->second);
    });
  }
  if (!status.ok()) return status;
  std::vector<uint64_t> sizes;
  for (const ChunkBlob& b : blobs) sizes.push_back(b.blob.size_bytes);
  const MilBlobLayout layout = LayOutMilBlobs(sizes);
  for (size_t i = 0; i < blobs.size(); ++i) blobs[i].new_record = layout.record_offsets[i];
  for (size_t v = 0; v < values.size(); ++v) {
    values[v]->mutable_blob_file_value()->set_file_name(file_ref);
    values[v]->mutable_blob_file_value()->set_offset(blobs[value_blob[v]].new_record);
  }
  return blobs;
}

std::map<uint64_t, MilBlob> PlannedRecords(const std::vector<ChunkBlob>& blobs) {
  std::map<uint64_t, MilBlob> records;
  for (const ChunkBlob& b : blobs) {
    MilBlob blob = b.blob;
    blob.record_offset = b.new_record;
    blob.data_offset = b.new_record + kMilBlobRecordBytes;
    records[b.new_record] = blob;
  }
  return records;
}

std::string SerializeDeterministic(const coreml::Model& model) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    model.SerializeToCodedStream(&coded);
  }
  return bytes;
}

absl::Status AppendBytes(PipelinedWriter& out, const std::string& bytes) {
  return out.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
}

// Writes a weight file of `blobs` (their records planned by RelocateBlobs).
absl::StatusOr<WrittenObject> WriteWeightFile(const std::vector<ChunkBlob>& blobs, PipelinedWriter& out,
                                              ProgressTracker& tracker, RateLimiter& pace, const JobContext& context) {
  if (absl::Status s = AppendBytes(out, MilBlobHeaderBytes(static_cast<uint32_t>(blobs.size()))); !s.ok()) return s;
  uint64_t at = kMilBlobHeaderBytes;
  const std::map<uint64_t, MilBlob> records = PlannedRecords(blobs);
  for (const ChunkBlob& b : blobs) {
    if (absl::Status s = AppendBytes(out, std::string(b.new_record - at, '\0')); !s.ok()) return s;
    if (absl::Status s = AppendBytes(out, MilBlobRecordBytes(records.at(b.new_record))); !s.ok()) return s;
    if (absl::Status s =
            CopyByteRange(*b.source->object, b.blob.data_offset, b.blob.size_bytes, out, tracker, pace, context);
        !s.ok())
      return Annotate(
          s, absl::StrCat("copying the blob at offset ", b.blob.record_offset, " of '", b.source->blobs.name(), "'"));
    at = b.new_record + kMilBlobRecordBytes + b.blob.size_bytes;
  }
  return WrittenObject{
      at, [records](const RandomAccessObject& written) -> absl::Status {
        absl::StatusOr<MilBlobFile> read = MilBlobFile::Open(written, written.uri());
        if (!read.ok()) return Annotate(read.status(), "verifying the written weight file");
        bool same = read->blobs().size() == records.size();
        for (const auto& [offset, blob] : read->blobs()) {
          auto planned = records.find(offset);
          same = same && planned != records.end() && planned->second.dtype == blob.dtype &&
                 planned->second.size_bytes == blob.size_bytes && planned->second.data_offset == blob.data_offset;
        }
        if (same) return absl::OkStatus();
        return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                         absl::StrCat("weight file '", written.uri(), "' does not read back as planned"));
      }};
}

ObjectChecker ModelCheck(std::map<std::string, std::map<uint64_t, MilBlob>> weight_files) {
  return [weight_files = std::move(weight_files)](const RandomAccessObject& written) -> absl::Status {
    std::string bytes(written.size_bytes(), '\0');
    if (absl::Status s = written.ReadAt(0, bytes.size(), reinterpret_cast<std::byte*>(bytes.data())); !s.ok()) return s;
    coreml::Model model;
    if (!model.ParseFromString(bytes))
      return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                       absl::StrCat("'", written.uri(), "' does not parse back as a Core ML model"));
    if (model.has_pipeline()) {
      for (int i = 0; i < model.pipeline().models_size(); ++i) {
        const std::string file = absl::StrCat(i, "-weight.bin");
        std::map<std::string, std::map<uint64_t, MilBlob>> own;
        if (weight_files.count(file)) own[file] = weight_files.at(file);
        if (absl::Status s = VerifyMilProgram(model.pipeline().models(i), own); !s.ok())
          return Annotate(s, absl::StrCat("pipeline model ", i));
      }
      return absl::OkStatus();
    }
    return VerifyMilProgram(model, weight_files);
  };
}

// The interfaces between chunks: each crossing input of chunk k is an output of an earlier chunk
// with the same multi-array dtype and shape.
absl::Status CheckInterfaces(const std::vector<coreml::Model>& models) {
  std::map<std::string, std::string> made;  // name -> serialized feature type
  for (size_t k = 0; k < models.size(); ++k) {
    for (const auto& input : models[k].description().input()) {
      auto it = made.find(input.name());
      if (it != made.end() && it->second != input.type().SerializeAsString()) {
        return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                         absl::StrCat("chunk ", k + 1, " takes '", input.name(),
                                      "' with another type or shape than an earlier chunk gives it"));
      }
    }
    for (const auto& output : models[k].description().output())
      made.emplace(output.name(), output.type().SerializeAsString());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<CoreMlBisectJobPlan>> MakeCoreMlBisectPlan(const v1::BisectSpec& spec, size_t chunks,
                                                                          const PlanEnv& env,
                                                                          uint64_t* estimated_peak_bytes) {
  auto job_plan = std::make_shared<CoreMlBisectJobPlan>();
  absl::StatusOr<Location> location = env.router.Resolve(spec.input());
  if (!location.ok()) return WithField(location.status());
  job_plan->location = *location;
  absl::StatusOr<CoreMlPackage> package = CoreMlPackage::Open(*location->store, location->uri);
  if (!package.ok()) return WithField(package.status());
  job_plan->package = std::make_unique<CoreMlPackage>(*std::move(package));
  if (job_plan->package->model().ml_program().functions_size() != 1) {
    return MakeError(absl::StatusCode::kInvalidArgument, "UNSUPPORTED_FORMAT",
                     absl::StrCat("'", job_plan->package->model_uri(), "' has ",
                                  job_plan->package->model().ml_program().functions_size(),
                                  " functions; bisect splits single-function programs (as coremltools does)"),
                     {{"field", "bisect.input"}});
  }
  absl::StatusOr<MilProgramIndex> index = IndexMilProgram(*job_plan->package);
  if (!index.ok()) return WithField(index.status());
  job_plan->index = *std::move(index);
  absl::StatusOr<CoreMlBisectPlan> plan = PlanCoreMlBisect(job_plan->index, chunks);
  if (!plan.ok()) return plan.status();
  job_plan->plan = *std::move(plan);
  const bool replace = spec.overwrite() || env.attempt > 1;
  if (absl::Status s = Publication::CheckDirectoryVacant(env.router, spec.output(), replace, "bisect.output"); !s.ok())
    return s;
  // The program is held by the original, one chunk model and its serialized bytes.
  *estimated_peak_bytes = kCoreMlBaseMemoryBytes + 3 * job_plan->package->model_bytes();
  return job_plan;
}

absl::StatusOr<v1::JobResult> ProduceCoreMlBisect(CoreMlBisectJobPlan& job_plan, const JobRun& run,
                                                  JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const v1::BisectSpec& spec = run.spec.bisect();
  CoreMlPackage& package = *job_plan.package;
  const MilProgramIndex& index = job_plan.index;
  const CoreMlBisectPlan& plan = job_plan.plan;
  const size_t count = plan.chunks.size();
  ProgressTracker tracker(context, plan.total_bytes, index.weights.size());
  tracker.SetPhase("plan");
  absl::StatusOr<Publication> output =
      Publication::ForDirectory(*run.router, spec.output(), spec.overwrite(), run.attempt, "bisect.output");
  if (!output.ok()) return output.status();
  const std::string stem = Stem(package.uri());
  context.Log(
      absl::StrFormat("splitting Core ML program '%s' (%d ops, %d compute, %d stored weight bytes) into %d "
                      "chunks at '%s'%s",
                      package.uri(), index.ops.size(), index.compute_ops.size(), plan.total_bytes, count, output->uri(),
                      spec.pipeline() ? " as one pipeline package" : ""));

  std::vector<coreml::Model> models;
  for (const CoreMlChunkPlan& chunk : plan.chunks) {
    absl::StatusOr<coreml::Model> model = BuildCoreMlChunk(package.model(), index, chunk);
    if (!model.ok()) return model.status();
    models.push_back(*std::move(model));
  }
  if (absl::Status s = CheckInterfaces(models); !s.ok()) return s;

  RateLimiter pace(run.io_bytes_per_second);
  tracker.SetPhase("execute");
  // Package directories, and per package its model and weight files (name -> planned records).
  struct PackageFiles {
    std::string dir;
    std::vector<std::string> weight_names;
  };
  std::vector<PackageFiles> packages;
  std::vector<uint64_t> weight_bytes(count, 0);
  auto write_weights = [&](const std::string& dir, const std::string& name, const std::vector<ChunkBlob>& blobs,
                           size_t k) -> absl::Status {
    absl::StatusOr<v1::Artifact> artifact = output->Write(
        output->UriOf(absl::StrCat(dir, "/", kCoreMlWeightsDir, "/", name)), "chunk_weights",
        [&](PipelinedWriter& out) { return WriteWeightFile(blobs, out, tracker, pace, context); }, tracker, context);
    if (!artifact.ok()) return artifact.status();
    weight_bytes[k] = artifact->size_bytes();
    tracker.AddTensors(blobs.size());
    return absl::OkStatus();
  };
  auto write_model = [&](const std::string& dir, const coreml::Model& model,
                         std::map<std::string, std::map<uint64_t, MilBlob>> records) -> absl::Status {
    const std::string bytes = SerializeDeterministic(model);
    absl::StatusOr<v1::Artifact> artifact = output->Write(
        output->UriOf(absl::StrCat(dir, "/", kCoreMlModelPath)), "chunk_model",
        [&](PipelinedWriter& out) -> absl::StatusOr<WrittenObject> {
          if (absl::Status s = AppendBytes(out, bytes); !s.ok()) return s;
          return WrittenObject{bytes.size(), ModelCheck(std::move(records))};
        },
        tracker, context);
    return artifact.status();
  };
  if (spec.pipeline()) {
    const std::string dir = absl::StrCat(stem, "-pipeline-of-", count, ".mlpackage");
    coreml::Model pipeline;
    pipeline.set_specification_version(package.model().specification_version());
    std::map<std::string, std::map<uint64_t, MilBlob>> records;
    PackageFiles files{dir, {}};
    std::set<std::string> produced;
    for (size_t k = 0; k < count; ++k) {
      const std::string name = absl::StrCat(k, "-weight.bin");
      absl::StatusOr<std::vector<ChunkBlob>> blobs =
          RelocateBlobs(models[k], package, absl::StrCat("@model_path/weights/", name));
      if (!blobs.ok()) return blobs.status();
      if (absl::Status s = write_weights(dir, name, *blobs, k); !s.ok()) return s;
      records[name] = PlannedRecords(*blobs);
      files.weight_names.push_back(name);
      for (const auto& input : models[k].description().input()) {
        if (!produced.count(input.name()) && produced.insert(input.name()).second)
          *pipeline.mutable_description()->add_input() = input;
      }
      for (const auto& out : models[k].description().output()) produced.insert(out.name());
      *pipeline.mutable_pipeline()->add_models() = models[k];
    }
    *pipeline.mutable_description()->mutable_output() = package.model().description().output();
    if (absl::Status s = write_model(dir, pipeline, std::move(records)); !s.ok()) return s;
    packages.push_back(files);
  } else {
    for (size_t k = 0; k < count; ++k) {
      const std::string dir = absl::StrCat(stem, "-chunk", k + 1, "-of-", count, ".mlpackage");
      absl::StatusOr<std::vector<ChunkBlob>> blobs = RelocateBlobs(models[k], package, kCoreMlWeightFileRef);
      if (!blobs.ok()) return blobs.status();
      if (absl::Status s = write_weights(dir, "weight.bin", *blobs, k); !s.ok()) return s;
      if (absl::Status s = write_model(dir, models[k], {{"weight.bin", PlannedRecords(*blobs)}}); !s.ok()) return s;
      packages.push_back({dir, {"weight.bin"}});
    }
  }

  // Manifests name their items by the SHA-256 of what they hold, known once committed.
  if (absl::Status s = output->Commit(tracker, context); !s.ok()) return s;
  std::map<std::string, std::string> digest;  // output-relative name -> sha256
  for (const v1::Artifact& a : output->artifacts()) digest[a.uri().substr(output->uri().size() + 1)] = a.sha256();
  for (const PackageFiles& p : packages) {
    std::string weights_digest;
    for (const std::string& w : p.weight_names)
      weights_digest += digest[absl::StrCat(p.dir, "/", kCoreMlWeightsDir, "/", w)];
    const std::string manifest =
        CoreMlManifestJson(digest[absl::StrCat(p.dir, "/", kCoreMlModelPath)], Sha256Hex(weights_digest));
    absl::StatusOr<v1::Artifact> written =
        output->WriteSmall(output->UriOf(absl::StrCat(p.dir, "/Manifest.json")), manifest, "chunk_manifest");
    if (!written.ok()) return written.status();
  }

  std::vector<uint64_t> sizes;
  for (const CoreMlChunkPlan& c : plan.chunks) sizes.push_back(c.size_bytes);
  ordered_json chunks_json = ordered_json::array();
  for (size_t k = 0; k < count; ++k) {
    const CoreMlChunkPlan& chunk = plan.chunks[k];
    const PackageFiles& p = packages[spec.pipeline() ? 0 : k];
    chunks_json.push_back({{"index", k + 1},
                           {"package", p.dir},
                           {"weight_file", spec.pipeline() ? p.weight_names[k] : p.weight_names[0]},
                           {"size_bytes", chunk.size_bytes},
                           {"weight_file_bytes", weight_bytes[k]},
                           {"ops", chunk.ops.size()},
                           {"compute_ops", chunk.end_position - chunk.first_position},
                           {"inputs", chunk.inputs},
                           {"outputs", chunk.outputs},
                           {"crossing_in", chunk.crossing_in}});
  }
  ordered_json chunk_index;
  chunk_index["format"] = "coreml";
  chunk_index["source"] = package.uri();
  chunk_index["granularity"] = "op";
  chunk_index["specification_version"] = package.model().specification_version();
  chunk_index["pipeline"] = spec.pipeline();
  chunk_index["total_size"] = plan.total_bytes;
  chunk_index["imbalance_ratio"] = ImbalanceRatio(sizes);
  chunk_index["fp16_boundaries"] = package.model().specification_version() >= 7 ? "fp16" : "cast to fp32";
  chunk_index["program_order_split"] = {{"first_bytes", plan.program_order_first},
                                        {"second_bytes", plan.program_order_second}};
  chunk_index["chunks"] = std::move(chunks_json);
  absl::StatusOr<v1::Artifact> index_artifact =
      output->WriteSmall(output->UriOf(stem + ".chunks.json"), chunk_index.dump(2) + "\n", "index");
  if (!index_artifact.ok()) return index_artifact.status();

  v1::JobResult result;
  v1::JobFigures* figures = result.mutable_figures();
  v1::BisectFigures* bisect = figures->mutable_bisect();
  *bisect = MakeBisectFigures(sizes, weight_bytes, "op", index.compute_ops.size());
  for (size_t k = 1; k < count; ++k) bisect->add_crossing_tensors(plan.chunks[k].crossing_in.size());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(package.model_bytes() + plan.total_bytes);
  figures->set_tensors(index.weights.size());
  figures->set_throughput_bytes_per_second(seconds > 0 ? figures->bytes_read() / seconds : 0);
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());

  ordered_json manifest = ManifestHeader(run, "bisect");
  manifest["input"] = {{"uri", package.uri()},
                       {"format", "coreml"},
                       {"specification_version", package.model().specification_version()},
                       {"ops", index.ops.size()},
                       {"weight_bytes", plan.total_bytes}};
  manifest["figures"] = MessageJson(*figures);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
