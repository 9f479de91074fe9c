// One table of kernel entry points per instruction set, chosen once at import (cpu.h).
#pragma once
#include <cstdint>
#include <type_traits>

#include "asymmetric.h"
#include "cpu.h"
#include "topk.h"

namespace hashpivot {

struct KernelTable {
  Isa isa;
  // nq queries over rows [begin, end) of codes; cols[q] collects query q (rows fed in order).
  void (*knn_heap)(const uint8_t* queries, int64_t nq, const uint8_t* codes, int64_t begin,
                   int64_t end, int nbytes, HeapTopK* cols);
  void (*knn_count)(const uint8_t* queries, int64_t nq, const uint8_t* codes, int64_t begin,
                    int64_t end, int nbytes, CountingTopK* cols);
  void (*range)(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end, int nbytes,
                RangeCollector* col);
  void (*distance_row)(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end,
                       int nbytes, int32_t* out);
  // Pivot band over rows [begin, end): lo/hi are the query's per-pivot bounds (d_q -/+ t).
  int64_t (*band_filter_u8)(const uint8_t* table, int P, int64_t begin, int64_t end,
                            const int32_t* lo, const int32_t* hi, int64_t* out);
  int64_t (*band_filter_u16)(const uint16_t* table, int P, int64_t begin, int64_t end,
                             const int32_t* lo, const int32_t* hi, int64_t* out);
  void (*band_knn_heap_u8)(const uint8_t* q, const uint8_t* codes, int nbytes,
                           const uint8_t* table, int P, int64_t begin, int64_t end,
                           const int32_t* lo, const int32_t* hi, HeapTopK* col);
  void (*band_knn_count_u8)(const uint8_t* q, const uint8_t* codes, int nbytes,
                            const uint8_t* table, int P, int64_t begin, int64_t end,
                            const int32_t* lo, const int32_t* hi, CountingTopK* col);
  void (*band_knn_heap_u16)(const uint8_t* q, const uint8_t* codes, int nbytes,
                            const uint16_t* table, int P, int64_t begin, int64_t end,
                            const int32_t* lo, const int32_t* hi, HeapTopK* col);
  void (*band_knn_count_u16)(const uint8_t* q, const uint8_t* codes, int nbytes,
                             const uint16_t* table, int P, int64_t begin, int64_t end,
                             const int32_t* lo, const int32_t* hi, CountingTopK* col);
  // Same result as band_knn over the rows of n ranges, computed distance first (pivot_filter.h:
  // band_late); one call per query for all its ranges, so the query is set up once.
  void (*band_late_heap_u8)(const uint8_t*, const uint8_t*, int, const uint8_t*, int,
                            const RowRange*, int64_t, const int32_t*, const int32_t*, HeapTopK*);
  void (*band_late_count_u8)(const uint8_t*, const uint8_t*, int, const uint8_t*, int,
                             const RowRange*, int64_t, const int32_t*, const int32_t*,
                             CountingTopK*);
  void (*band_late_heap_u16)(const uint8_t*, const uint8_t*, int, const uint16_t*, int,
                             const RowRange*, int64_t, const int32_t*, const int32_t*, HeapTopK*);
  void (*band_late_count_u16)(const uint8_t*, const uint8_t*, int, const uint16_t*, int,
                              const RowRange*, int64_t, const int32_t*, const int32_t*,
                              CountingTopK*);
  void (*band_late_tie_u8)(const uint8_t*, const uint8_t*, int, const uint8_t*, int,
                           const RowRange*, int64_t, const int32_t*, const int32_t*, TieHeap*);
  void (*band_late_tie_u16)(const uint8_t*, const uint8_t*, int, const uint16_t*, int,
                            const RowRange*, int64_t, const int32_t*, const int32_t*, TieHeap*);
  // One query over rows [begin, end) fed to a tie-aware heap (rows in any order).
  void (*knn_tie)(const uint8_t* q, const uint8_t* codes, int64_t begin, int64_t end, int nbytes,
                  TieHeap* col);
  // Quantized asymmetric scores (asymmetric.h) of nq queries over rows [begin, end).
  void (*asym_knn_heap)(const AsymQuery* qs, int64_t nq, const uint8_t* codes, int64_t begin,
                        int64_t end, int nbytes, HeapTopK* cols);
  void (*asym_knn_count)(const AsymQuery* qs, int64_t nq, const uint8_t* codes, int64_t begin,
                         int64_t end, int nbytes, CountingTopK* cols);
};

const KernelTable& kernels();     // the table in use
Isa best_isa();                   // what this CPU supports
void set_isa(Isa isa);            // for tests and benchmarks; throws if the CPU lacks it

// Overloads so drivers can be written once over the collector type.
inline void knn_rows(const KernelTable& t, const uint8_t* q, int64_t nq, const uint8_t* c,
                     int64_t b, int64_t e, int nb, HeapTopK* cols) {
  t.knn_heap(q, nq, c, b, e, nb, cols);
}
inline void knn_rows(const KernelTable& t, const uint8_t* q, int64_t nq, const uint8_t* c,
                     int64_t b, int64_t e, int nb, CountingTopK* cols) {
  t.knn_count(q, nq, c, b, e, nb, cols);
}
inline void knn_rows(const KernelTable& t, const uint8_t* q, int64_t, const uint8_t* c, int64_t b,
                     int64_t e, int nb, TieHeap* col) {  // one query
  t.knn_tie(q, c, b, e, nb, col);
}
// Band first (read a code only for a row in the band): the table entry for a pivot table type
// T (uint8/uint16) and collector C, chosen at compile time (the members differ in type).
template <class T, class C>
inline void band_knn(const KernelTable& t, const uint8_t* q, const uint8_t* c, int nb, const T* tab,
                     int P, int64_t b, int64_t e, const int32_t* lo, const int32_t* hi, C* col) {
  constexpr bool u8 = std::is_same_v<T, uint8_t>, heap = std::is_same_v<C, HeapTopK>;
  auto pick = [&] {
    if constexpr (u8 && heap) return t.band_knn_heap_u8;
    else if constexpr (u8) return t.band_knn_count_u8;
    else if constexpr (heap) return t.band_knn_heap_u16;
    else return t.band_knn_count_u16;
  };
  pick()(q, c, nb, tab, P, b, e, lo, hi, col);
}
// Distance first (check the band only for a row that beats the threshold), over n row ranges:
// the same result.
template <class T, class C>
inline void band_late(const KernelTable& t, const uint8_t* q, const uint8_t* c, int nb, const T* tab,
                      int P, const RowRange* ranges, int64_t n, const int32_t* lo,
                      const int32_t* hi, C* col) {
  constexpr bool u8 = std::is_same_v<T, uint8_t>, heap = std::is_same_v<C, HeapTopK>;
  constexpr bool tie = std::is_same_v<C, TieHeap>;
  auto pick = [&] {
    if constexpr (tie && u8) return t.band_late_tie_u8;
    else if constexpr (tie) return t.band_late_tie_u16;
    else if constexpr (u8 && heap) return t.band_late_heap_u8;
    else if constexpr (u8) return t.band_late_count_u8;
    else if constexpr (heap) return t.band_late_heap_u16;
    else return t.band_late_count_u16;
  };
  pick()(q, c, nb, tab, P, ranges, n, lo, hi, col);
}
inline int64_t band_filter(const KernelTable& t, const uint8_t* tab, int P, int64_t b, int64_t e,
                           const int32_t* lo, const int32_t* hi, int64_t* out) {
  return t.band_filter_u8(tab, P, b, e, lo, hi, out);
}
inline int64_t band_filter(const KernelTable& t, const uint16_t* tab, int P, int64_t b, int64_t e,
                           const int32_t* lo, const int32_t* hi, int64_t* out) {
  return t.band_filter_u16(tab, P, b, e, lo, hi, out);
}

}  // namespace hashpivot
