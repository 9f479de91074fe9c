// Which ISA's engine runs: the best this CPU has (or HASHPIVOT_ISA), switchable by tests.
#include "dispatch.h"

#include <atomic>
#include <stdexcept>
#include <string>

namespace hashpivot {
namespace {

const EngineOps* const kOps[kIsaCount] = {&kPortableOps, &kPopcntOps, &kAvx2Ops, &kAvx512Ops};

std::atomic<const EngineOps*>& current() {
  static std::atomic<const EngineOps*> ops{kOps[static_cast<int>(default_isa())]};
  return ops;
}

}  // namespace

const EngineOps& engine() { return *current().load(std::memory_order_acquire); }

void set_isa(Isa isa) {
  if (isa > cpu_features().best)
    throw InputError(std::string("this CPU does not support the ") + isa_name(isa) +
                     " kernels (best: " + isa_name(cpu_features().best) + ")");
  current().store(kOps[static_cast<int>(isa)], std::memory_order_release);
}

}  // namespace hashpivot
