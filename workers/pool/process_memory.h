// Process memory readings and the default memory budget.
#ifndef MODELSMITH_WORKERS_POOL_PROCESS_MEMORY_H_
#define MODELSMITH_WORKERS_POOL_PROCESS_MEMORY_H_

#include <cstdint>
#include <string>

namespace modelsmith {

// Resident set size now (VmRSS), 0 if unreadable.
uint64_t CurrentResidentBytes();

// The process's peak resident set size (VmHWM), 0 if unreadable.
uint64_t PeakResidentBytes();

// The cgroup memory limit under `cgroup_root` (v2 memory.max, else v1
// memory/memory.limit_in_bytes), or 0 when there is none ("max") or it is not below physical
// memory (v1 spells "no limit" as a huge number). In a container this is the pod's limit.
uint64_t CgroupMemoryLimitBytes(const std::string& cgroup_root = "/sys/fs/cgroup");

// Physical memory (sysconf).
uint64_t PhysicalMemoryBytes();

// The cgroup limit when there is one, else 75% of physical memory.
uint64_t DefaultMemoryBudgetBytes();

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_POOL_PROCESS_MEMORY_H_
