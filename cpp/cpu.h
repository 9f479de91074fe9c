// Run-time choice of instruction set: the best one this CPU has, capped by HASHPIVOT_ISA.
#pragma once
#include <cstdlib>
#include <string>

namespace hashpivot {

enum class Isa { kPortable = 0, kPopcnt = 1, kAvx2 = 2, kAvx512 = 3 };
constexpr int kIsaCount = 4;

inline const char* isa_name(Isa isa) {
  static const char* names[kIsaCount] = {"portable", "popcnt", "avx2", "avx512"};
  return names[static_cast<int>(isa)];
}

inline bool parse_isa(const std::string& s, Isa* out) {
  for (int i = 0; i < kIsaCount; ++i)
    if (s == isa_name(static_cast<Isa>(i))) {
      *out = static_cast<Isa>(i);
      return true;
    }
  return false;
}

// What the CPU (and the OS, for the vector registers) supports: probed once.
struct CpuFeatures {
  bool popcnt, avx2, avx512_vpopcntdq, avx512_vnni;
  Isa best;
};

inline const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    __builtin_cpu_init();
    CpuFeatures c{};
    c.popcnt = __builtin_cpu_supports("popcnt");
    // the AVX2 kernels also use F16C (float16 rerank) and BMI2; every AVX2 CPU has them
    c.avx2 = c.popcnt && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
             __builtin_cpu_supports("bmi2");
    c.avx512_vpopcntdq = c.avx2 && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512vpopcntdq");
    // the centre scores' u8 x s8 sums (every CPU with VPOPCNTDQ but Knights Mill has it)
    c.avx512_vnni = c.avx512_vpopcntdq && __builtin_cpu_supports("avx512vnni");
    c.best = c.avx512_vnni ? Isa::kAvx512
             : c.avx2      ? Isa::kAvx2
             : c.popcnt    ? Isa::kPopcnt
                           : Isa::kPortable;
    return c;
  }();
  return f;
}

// HASHPIVOT_ISA=portable|popcnt|avx2|avx512 lowers the level (never above what the CPU has).
inline Isa default_isa() {
  const Isa best = cpu_features().best;
  const char* env = std::getenv("HASHPIVOT_ISA");
  Isa wanted;
  if (env && *env && parse_isa(env, &wanted) && wanted < best) return wanted;
  return best;
}

}  // namespace hashpivot
