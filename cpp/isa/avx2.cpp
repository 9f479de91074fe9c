// The engine compiled for AVX2 (with POPCNT, BMI2, F16C).
// Library headers first, at the baseline ISA (engine/prelude.h); then, inside the target
// region, this ISA's arithmetic and the engine's templates, all in anonymous namespaces.
#include "../engine/prelude.h"

#pragma GCC push_options
#pragma GCC target("avx2,popcnt,bmi,bmi2,f16c")
#include "avx2.h"
#include "../engine/kernels.h"
#include "../engine/search.h"
#include "../dispatch.h"

namespace hashpivot {
extern const EngineOps kAvx2Ops = HP_ENGINE_OPS(Avx2);
}  // namespace hashpivot
#pragma GCC pop_options
