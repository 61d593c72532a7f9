#include "workers/pool/process_memory.h"

#include <unistd.h>

#include <fstream>
#include <string>

namespace modelsmith {
namespace {

// Reads a "Key:   123 kB" line of /proc/self/status.
uint64_t StatusFieldBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() && line[key.size()] == ':') {
      return std::stoull(line.substr(key.size() + 1)) * 1024;
    }
  }
  return 0;
}

uint64_t ReadNumberFile(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return 0;
  try {
    return std::stoull(text);
  } catch (...) {
    return 0;
  }
}

}  // namespace

uint64_t CurrentResidentBytes() { return StatusFieldBytes("VmRSS"); }

uint64_t PeakResidentBytes() { return StatusFieldBytes("VmHWM"); }

uint64_t PhysicalMemoryBytes() {
  return static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
}

uint64_t CgroupMemoryLimitBytes(const std::string& cgroup_root) {
  uint64_t limit = ReadNumberFile(cgroup_root + "/memory.max");
  if (limit == 0) limit = ReadNumberFile(cgroup_root + "/memory/memory.limit_in_bytes");
  // cgroup v1 reports "no limit" as a huge number.
  if (limit == 0 || limit >= PhysicalMemoryBytes()) return 0;
  return limit;
}

uint64_t DefaultMemoryBudgetBytes() {
  if (uint64_t limit = CgroupMemoryLimitBytes(); limit > 0) return limit;
  return PhysicalMemoryBytes() / 4 * 3;
}

}  // namespace modelsmith
