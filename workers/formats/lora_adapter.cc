#include "workers/formats/lora_adapter.h"

#include "workers/common/pattern.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "workers/common/error.h"
#include "workers/formats/adapter_keys.h"

namespace modelsmith {
namespace {

enum class Role { kDown, kUp, kMagnitude, kAlpha };

struct KeyRole {
  std::string module;  // the key prefix shared by the module's tensors
  Role role;
};

bool StripSuffix(const std::string& name, absl::string_view suffix, std::string* prefix) {
  if (!absl::EndsWith(name, suffix) || name.size() == suffix.size()) return false;
  *prefix = name.substr(0, name.size() - suffix.size());
  return true;
}

// The module and role of one adapter key, or nullopt for a key of no known form.
std::optional<KeyRole> Classify(const std::string& name) {
  std::string module;
  if (StripSuffix(name, ".alpha", &module)) return KeyRole{module, Role::kAlpha};
  if (StripSuffix(name, ".dora_scale", &module)) return KeyRole{module, Role::kMagnitude};
  if (StripSuffix(name, ".lora_down.weight", &module)) return KeyRole{module, Role::kDown};
  if (StripSuffix(name, ".lora_up.weight", &module)) return KeyRole{module, Role::kUp};
  if (StripSuffix(name, ".lora.down.weight", &module)) return KeyRole{module, Role::kDown};
  if (StripSuffix(name, ".lora.up.weight", &module)) return KeyRole{module, Role::kUp};
  if (StripSuffix(name, "_lora.down.weight", &module)) return KeyRole{module + "_lora", Role::kDown};
  if (StripSuffix(name, "_lora.up.weight", &module)) return KeyRole{module + "_lora", Role::kUp};
  // PEFT: <module>.lora_A[.<adapter>].weight, <module>.lora_magnitude_vector[.<adapter>][.weight]
  const std::vector<std::string> parts = absl::StrSplit(name, '.');
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p != "lora_A" && p != "lora_B" && p != "lora_magnitude_vector") continue;
    const size_t rest = parts.size() - i - 1;
    const bool weight_last = parts.back() == "weight";
    const bool ok =
        p == "lora_magnitude_vector" ? rest <= 2 && (rest < 2 || weight_last) : (rest == 1 || rest == 2) && weight_last;
    if (!ok) return std::nullopt;
    module = absl::StrJoin(parts.begin(), parts.begin() + i, ".");
    return KeyRole{module, p == "lora_A" ? Role::kDown : p == "lora_B" ? Role::kUp : Role::kMagnitude};
  }
  return std::nullopt;
}

constexpr const char* kDiffusersComponents[] = {"unet", "text_encoder", "text_encoder_2", "transformer"};
constexpr const char* kKohyaPrefixes[] = {"lora_unet", "lora_te1", "lora_te2", "lora_te3", "lora_te"};

// Fills path, component and flattened from the module key, by style.
void ResolvePath(const std::string& style, LoraModule& m) {
  m.path = m.key;
  if (style == "kohya") {
    for (const char* prefix : kKohyaPrefixes) {
      if (absl::StartsWith(m.key, absl::StrCat(prefix, "_"))) {
        m.component = std::string(prefix).substr(5);
        m.path = m.key.substr(std::string(prefix).size() + 1);
        m.flattened = true;
        return;
      }
    }
    return;
  }
  if (absl::StartsWith(m.path, "base_model.model.")) m.path = m.path.substr(17);
  for (const char* component : kDiffusersComponents) {
    if (absl::StartsWith(m.path, absl::StrCat(component, "."))) {
      m.component = component;
      m.path = m.path.substr(m.component.size() + 1);
      break;
    }
  }
  // diffusers' attention processors: "<block>.processor.to_q_lora" is the module "<block>.to_q",
  // and to_out is a ModuleList whose Linear is "to_out.0".
  if (absl::EndsWith(m.path, "_lora")) {
    std::string path = m.path.substr(0, m.path.size() - 5);
    std::vector<std::string> parts = absl::StrSplit(path, '.');
    if (parts.size() >= 2 && parts[parts.size() - 2] == "processor") parts.erase(parts.end() - 2);
    if (parts.back() == "to_out") parts.push_back("0");
    m.path = absl::StrJoin(parts, ".");
  }
}

absl::Status ConfigError(absl::string_view field, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "LORA_CONFIG_INVALID",
                   absl::StrCat("adapter config field '", field, "' ", message), {{"field", std::string(field)}});
}

struct Config {
  double r = 8;
  double alpha = 8;
  bool use_rslora = false;
  bool fan_in_fan_out = false;
  std::vector<std::pair<Pattern, double>> rank_pattern, alpha_pattern;
};

absl::StatusOr<std::vector<std::pair<Pattern, double>>> Patterns(const nlohmann::json& config, const char* field) {
  std::vector<std::pair<Pattern, double>> out;
  if (!config.contains(field) || config[field].is_null()) return out;
  if (!config[field].is_object()) return ConfigError(field, "must be an object of pattern -> number");
  for (const auto& [pattern, value] : config[field].items()) {
    if (!value.is_number() || value.get<double>() <= 0)
      return ConfigError(field, absl::StrCat("entry '", pattern, "' must be a positive number"));
    // get_pattern_key: the module path is the pattern or ends with ".<pattern>".
    absl::StatusOr<Pattern> compiled = Pattern::Compile(absl::StrCat("(.*\\.)?(", pattern, ")"), field);
    if (!compiled.ok()) {
      return ConfigError(field, absl::StrCat("entry '", pattern, "' is not a valid regular expression (RE2 syntax): ",
                                             compiled.status().message()));
    }
    out.emplace_back(*std::move(compiled), value.get<double>());
  }
  return out;
}

absl::StatusOr<Config> ParseConfig(const nlohmann::json& json) {
  if (!json.is_object()) return ConfigError("(root)", "must be a JSON object");
  Config c;
  auto number = [&](const char* field, double* out) -> absl::Status {
    if (!json.contains(field) || json[field].is_null()) return absl::OkStatus();
    if (!json[field].is_number() || json[field].get<double>() <= 0)
      return ConfigError(field, "must be a positive number");
    *out = json[field].get<double>();
    return absl::OkStatus();
  };
  auto flag = [&](const char* field, bool* out) -> absl::Status {
    if (!json.contains(field) || json[field].is_null()) return absl::OkStatus();
    if (!json[field].is_boolean()) return ConfigError(field, "must be true or false");
    *out = json[field].get<bool>();
    return absl::OkStatus();
  };
  if (json.contains("peft_type") && json["peft_type"].is_string() && json["peft_type"] != "LORA") {
    return ConfigError(
        "peft_type", absl::StrCat("is '", json["peft_type"].get<std::string>(), "'; only LORA adapters can be merged"));
  }
  for (absl::Status s : {number("r", &c.r), number("lora_alpha", &c.alpha), flag("use_rslora", &c.use_rslora),
                         flag("fan_in_fan_out", &c.fan_in_fan_out)}) {
    if (!s.ok()) return s;
  }
  absl::StatusOr<std::vector<std::pair<Pattern, double>>> ranks = Patterns(json, "rank_pattern");
  if (!ranks.ok()) return ranks.status();
  absl::StatusOr<std::vector<std::pair<Pattern, double>>> alphas = Patterns(json, "alpha_pattern");
  if (!alphas.ok()) return alphas.status();
  c.rank_pattern = *std::move(ranks);
  c.alpha_pattern = *std::move(alphas);
  return c;
}

double PatternValue(const std::vector<std::pair<Pattern, double>>& patterns, const std::string& path, double fallback) {
  for (const auto& [re, value] : patterns) {
    if (re.FullMatch(path)) return value;
  }
  return fallback;
}

absl::Status ShapeError(const LoraModule& m, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "LORA_SHAPE_MISMATCH",
                   absl::StrCat("adapter module '", m.key, "': ", message), {{"tensor", m.key}});
}

std::string ShapeText(const std::vector<uint64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

absl::Status CheckShapes(LoraModule& m) {
  const auto& a = m.down->shape;
  const auto& b = m.up->shape;
  if ((a.size() != 2 && a.size() != 4) || b.size() != a.size()) {
    return ShapeError(m, absl::StrCat("A ", ShapeText(a), " and B ", ShapeText(b),
                                      " must both be 2-D (linear) or 4-D (convolution)"));
  }
  if (a[0] == 0 || b[1] == 0) return ShapeError(m, "rank 0");
  // A grouped B (convolutions only) takes r / groups of A's channels per output channel.
  const bool grouped = b.size() == 4 && b[1] != a[0] && a[0] % b[1] == 0 && b[0] % (a[0] / b[1]) == 0;
  if (b[1] != a[0] && !grouped)
    return ShapeError(m, absl::StrCat("B ", ShapeText(b), " does not take A's rank ", a[0]));
  if (b.size() == 4 && (b[2] != 1 || b[3] != 1))
    return ShapeError(m, absl::StrCat("B ", ShapeText(b), " must be a 1x1 convolution"));
  m.rank = a[0];
  m.groups = grouped ? a[0] / b[1] : 1;
  if (m.magnitude != nullptr && ElementCount(m.magnitude->shape).value_or(0) != b[0]) {
    return ShapeError(m, absl::StrCat("DoRA magnitude ", ShapeText(m.magnitude->shape),
                                      " must hold one value per output row (", b[0], ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoraAdapter> ParseLoraAdapter(const std::vector<TensorInfo>& tensors,
                                             const std::optional<nlohmann::json>& config,
                                             const std::map<std::string, std::string>& metadata,
                                             const ScalarReader& read_scalar) {
  LoraAdapter adapter;
  adapter.style = DetectAdapterStyle(tensors).style;
  if (adapter.style.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "LORA_NOT_AN_ADAPTER",
                     "no LoRA keys (lora_A/lora_B, lora_down/lora_up, lora.down/lora.up) in the adapter file");
  }
  std::optional<Config> parsed;
  if (config) {
    absl::StatusOr<Config> c = ParseConfig(*config);
    if (!c.ok()) return Annotate(c.status(), "adapter_config.json");
    parsed = *c;
    adapter.config_source = "adapter_config.json";
  } else if (auto it = metadata.find("lora_adapter_metadata"); it != metadata.end()) {
    const nlohmann::json json = nlohmann::json::parse(it->second, nullptr, false);
    absl::StatusOr<Config> c =
        json.is_discarded() ? ConfigError("lora_adapter_metadata", "is not JSON") : ParseConfig(json);
    if (!c.ok()) return Annotate(c.status(), "__metadata__");
    parsed = *c;
    adapter.config_source = "lora_adapter_metadata";
  } else if (adapter.style == "peft") {
    return MakeError(absl::StatusCode::kInvalidArgument, "LORA_CONFIG_MISSING",
                     "a PEFT adapter needs its adapter_config.json (r, lora_alpha) beside the weights");
  }
  if (parsed) adapter.use_rslora = parsed->use_rslora;

  std::map<std::string, LoraModule> modules;
  std::map<std::string, const TensorInfo*> alphas;
  std::vector<std::string> order;
  for (const TensorInfo& t : tensors) {
    std::optional<KeyRole> role = Classify(t.name);
    if (!role) {
      adapter.stray_keys.push_back(t.name);
      continue;
    }
    if (role->role == Role::kAlpha) {
      alphas[role->module] = &t;
      continue;
    }
    auto [it, inserted] = modules.try_emplace(role->module);
    if (inserted) {
      it->second.key = role->module;
      order.push_back(role->module);
    }
    const TensorInfo** slot = role->role == Role::kDown ? &it->second.down
                              : role->role == Role::kUp ? &it->second.up
                                                        : &it->second.magnitude;
    if (*slot != nullptr) {
      return MakeError(
          absl::StatusCode::kInvalidArgument, "LORA_DUPLICATE_KEY",
          absl::StrCat("adapter module '", role->module, "' has two tensors for the same role ('", (*slot)->name,
                       "' and '", t.name, "'); an adapter file with several named adapters is not supported"),
          {{"tensor", t.name}});
    }
    *slot = &t;
  }
  if (adapter.config_source.empty()) adapter.config_source = alphas.empty() ? "default" : "alpha tensors";
  for (const std::string& key : order) {
    LoraModule m = std::move(modules[key]);
    if (m.down == nullptr || m.up == nullptr) {
      for (const TensorInfo* t : {m.down, m.up, m.magnitude}) {
        if (t != nullptr) adapter.stray_keys.push_back(t->name);
      }
      continue;
    }
    ResolvePath(adapter.style, m);
    if (absl::Status s = CheckShapes(m); !s.ok()) return s;
    double r = static_cast<double>(m.rank);
    if (parsed) {
      const double configured = PatternValue(parsed->rank_pattern, m.path, parsed->r);
      if (configured != r) {
        return ShapeError(m,
                          absl::StrCat("rank ", m.rank, " in the tensors but ", configured, " in the adapter config"));
      }
      m.alpha = PatternValue(parsed->alpha_pattern, m.path, parsed->alpha);
      m.fan_in_fan_out = parsed->fan_in_fan_out;
    } else {
      m.alpha = 0;
      if (auto it = alphas.find(key); it != alphas.end()) {
        absl::StatusOr<double> alpha = read_scalar(*it->second);
        if (!alpha.ok()) return alpha.status();
        if (!std::isfinite(*alpha) || *alpha < 0) {
          return MakeError(
              absl::StatusCode::kInvalidArgument, "LORA_CONFIG_INVALID",
              absl::StrCat("alpha '", it->second->name, "' is ", *alpha, "; it must be a finite number >= 0"),
              {{"tensor", it->second->name}});
        }
        m.alpha = *alpha;
        alphas.erase(it);
      }
      if (m.alpha == 0) m.alpha = r;  // kohya: a missing or zero alpha means alpha = r
    }
    m.scale = m.alpha / (adapter.use_rslora ? std::sqrt(r) : r);
    adapter.modules.push_back(std::move(m));
  }
  for (const auto& [module, t] : alphas) {
    if (!parsed) adapter.stray_keys.push_back(t->name);  // an alpha without its module
  }
  return adapter;
}

}  // namespace modelsmith
