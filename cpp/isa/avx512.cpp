// The engine compiled for AVX-512 with VPOPCNTDQ and VNNI.
// Library headers first, at the baseline ISA (engine/prelude.h); then, inside the target
// region, this ISA's arithmetic and the engine's templates, all in anonymous namespaces.
#include "../engine/prelude.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni,avx2,popcnt,bmi,bmi2,f16c")
#include "avx512.h"
#include "../engine/kernels.h"
#include "../engine/search.h"
#include "../dispatch.h"

namespace hashpivot {
extern const EngineOps kAvx512Ops = HP_ENGINE_OPS(Avx512);
}  // namespace hashpivot
#pragma GCC pop_options
