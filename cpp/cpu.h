// Run-time choice of instruction set: the best one this CPU has, capped by HASHPIVOT_ISA.
#pragma once
#include <cstdlib>
#include <cstring>
#include <string>

namespace hashpivot {

enum class Isa { kPortable = 0, kPopcnt = 1, kAvx2 = 2, kAvx512 = 3 };

inline const char* isa_name(Isa isa) {
  static const char* names[] = {"portable", "popcnt", "avx2", "avx512"};
  return names[static_cast<int>(isa)];
}

inline bool parse_isa(const std::string& s, Isa* out) {
  for (int i = 0; i <= 3; ++i)
    if (s == isa_name(static_cast<Isa>(i))) {
      *out = static_cast<Isa>(i);
      return true;
    }
  return false;
}

// The best level the CPU (and OS, for the vector registers) supports.
inline Isa detect_isa() {
  __builtin_cpu_init();
  const bool popcnt = __builtin_cpu_supports("popcnt");
  const bool avx2 = popcnt && __builtin_cpu_supports("avx2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512vpopcntdq");
  return avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : popcnt ? Isa::kPopcnt : Isa::kPortable;
}

// HASHPIVOT_ISA=portable|popcnt|avx2|avx512 lowers the level (never above what the CPU has).
inline Isa default_isa() {
  Isa best = detect_isa();
  const char* env = std::getenv("HASHPIVOT_ISA");
  Isa wanted;
  if (env && *env && parse_isa(env, &wanted) && wanted < best) return wanted;
  return best;
}

}  // namespace hashpivot
