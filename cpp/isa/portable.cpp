// The engine compiled for baseline x86-64 (no POPCNT): the fallback every CPU runs.
// Library headers first, at the baseline ISA (engine/prelude.h); then, inside the target
// region, this ISA's arithmetic and the engine's templates, all in anonymous namespaces.
#include "../engine/prelude.h"

#pragma GCC push_options
#include "scalar.h"
#include "../engine/kernels.h"
#include "../engine/search.h"
#include "../dispatch.h"

namespace hashpivot {
extern const EngineOps kPortableOps = HP_ENGINE_OPS(Portable);
}  // namespace hashpivot
#pragma GCC pop_options
