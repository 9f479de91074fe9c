// The engine compiled for x86-64 with POPCNT, no AVX2.
// Library headers first, at the baseline ISA (engine/prelude.h); then, inside the target
// region, this ISA's arithmetic and the engine's templates, all in anonymous namespaces.
#include "../engine/prelude.h"

#pragma GCC push_options
#pragma GCC target("popcnt")
#include "scalar.h"
#include "../engine/kernels.h"
#include "../engine/search.h"
#include "../dispatch.h"

namespace hashpivot {
extern const EngineOps kPopcntOps = HP_ENGINE_OPS(Popcnt);
}  // namespace hashpivot
#pragma GCC pop_options
