// Process memory readings and the default memory budget.
#ifndef MODELSMITH_WORKERS_POOL_PROCESS_MEMORY_H_
#define MODELSMITH_WORKERS_POOL_PROCESS_MEMORY_H_

#include <cstdint>

namespace modelsmith {

// Resident set size now (VmRSS), 0 if unreadable.
uint64_t CurrentResidentBytes();

// The process's peak resident set size (VmHWM), 0 if unreadable.
uint64_t PeakResidentBytes();

// The cgroup memory limit (v2 memory.max, else v1 memory.limit_in_bytes), or 0 when there is
// none or it is larger than physical memory.
uint64_t CgroupMemoryLimitBytes();

// Physical memory (sysconf).
uint64_t PhysicalMemoryBytes();

// The cgroup limit when there is one, else 75% of physical memory.
uint64_t DefaultMemoryBudgetBytes();

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_POOL_PROCESS_MEMORY_H_
