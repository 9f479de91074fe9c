// Compiles hamming.h and pivot_filter.h once per instruction set and fills the dispatch table.
// Target pragmas (not -m flags) keep inline library code at the baseline ISA, so no AVX code can
// leak into a function the portable path calls.
#include <atomic>
#include <stdexcept>
#include <string>

#include "dispatch.h"

#define HP_TABLE_FOR(NS, ISA)                                                              \
  KernelTable {                                                                            \
    ISA, &NS::knn_heap, &NS::knn_count, &NS::range, &NS::distance_row,                \
        &NS::band_filter_u8, &NS::band_filter_u16, &NS::band_knn_heap_u8,                  \
        &NS::band_knn_count_u8, &NS::band_knn_heap_u16, &NS::band_knn_count_u16,           \
        &NS::band_late_heap_u8, &NS::band_late_count_u8, &NS::band_late_heap_u16,          \
        &NS::band_late_count_u16, &NS::band_late_tie_u8, &NS::band_late_tie_u16,           \
        &NS::knn_tie, &NS::asym_knn_heap, &NS::asym_knn_count                              \
  }

#define HP_ISA isa_portable
#define HP_ISA_LEVEL 0
#define HP_POP PopcountSwar
#include "hamming.h"
#include "pivot_filter.h"
#include "asymmetric_scan.h"
#undef HP_ISA
#undef HP_ISA_LEVEL
#undef HP_POP

#pragma GCC push_options
#pragma GCC target("popcnt")
#define HP_ISA isa_popcnt
#define HP_ISA_LEVEL 1
#define HP_POP PopcountHw
#include "hamming.h"
#include "pivot_filter.h"
#include "asymmetric_scan.h"
#undef HP_ISA
#undef HP_ISA_LEVEL
#undef HP_POP
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,popcnt,bmi,bmi2")
#define HP_ISA isa_avx2
#define HP_ISA_LEVEL 2
#define HP_POP PopcountHw
#include "hamming.h"
#include "pivot_filter.h"
#include "asymmetric_scan.h"
#undef HP_ISA
#undef HP_ISA_LEVEL
#undef HP_POP
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt,bmi,bmi2")
#define HP_ISA isa_avx512
#define HP_ISA_LEVEL 3
#define HP_POP PopcountHw
#include "hamming.h"
#include "pivot_filter.h"
#include "asymmetric_scan.h"
#undef HP_ISA
#undef HP_ISA_LEVEL
#undef HP_POP
#pragma GCC pop_options

namespace hashpivot {
namespace {

const KernelTable kTables[4] = {
    HP_TABLE_FOR(isa_portable, Isa::kPortable),
    HP_TABLE_FOR(isa_popcnt, Isa::kPopcnt),
    HP_TABLE_FOR(isa_avx2, Isa::kAvx2),
    HP_TABLE_FOR(isa_avx512, Isa::kAvx512),
};

std::atomic<const KernelTable*>& current() {
  static std::atomic<const KernelTable*> table{&kTables[static_cast<int>(default_isa())]};
  return table;
}

}  // namespace

const KernelTable& kernels() { return *current().load(std::memory_order_acquire); }

Isa best_isa() {
  static const Isa best = detect_isa();
  return best;
}

void set_isa(Isa isa) {
  if (isa > best_isa())
    throw std::invalid_argument(std::string("this CPU does not support the ") + isa_name(isa) +
                                " kernels (best: " + isa_name(best_isa()) + ")");
  current().store(&kTables[static_cast<int>(isa)], std::memory_order_release);
}

}  // namespace hashpivot
