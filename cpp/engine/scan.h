// The one scan loop: rows [begin, end) (or a list of rows) fed to a collector, 8 rows at a time
// where the ISA has a group kernel. A row enters when its key beats the collector's threshold,
// the filter allows it and it passes the pivot band.
#pragma once
#include "metrics.h"

namespace hashpivot {
namespace {

constexpr int kGatherAhead = 16;  // rows of a list are random: keep several misses in flight

// Compiled once per metric x collector x filter x band and called (not inlined) by every
// first-stage body: the loop is the costly part to compile, and a call per range is free.
// `readable`: rows whose codes (and per-row arrays) exist; a range's last, partial group is
// scored as a group with its rows past `end` masked off when they are readable (an ivf list
// averages 4 such rows, which the one-row path scored at several times a grouped row's cost).
template <class M, class C, class F, class B>
__attribute__((noinline)) void scan_range(const M& metric, const uint8_t* codes, int64_t nb,
                                          int64_t begin, int64_t end, int64_t readable, C& col,
                                          F filter, B band) {
  const M m = metric;  // a local copy: its fields stay in registers across the collector's stores
  using Key = typename M::Key;
  Key thr = col.threshold();
  int64_t i = begin;
  if constexpr (M::kGroup) {
    alignas(32) Key keys[8];
    const int64_t whole = begin + (end - begin) / 8 * 8;  // past it: the partial group
    const int64_t group_end = whole < end && whole + 8 <= readable ? end : whole;
    for (; i < group_end; i += 8) {
      uint32_t allowed = i + 8 <= end ? 0xFF : (1u << (end - i)) - 1;
      if constexpr (F::kActive) {
        allowed &= filter.pre8(i);
        if (!allowed) continue;
      }
      const auto group = m.group(codes + i * nb, i);
      uint32_t mask = M::lt(group, thr) & allowed;
      if (__builtin_expect(mask == 0, 1)) continue;
      M::store(group, keys);  // only for a group with a row to push
      while (mask) {
        const int j = __builtin_ctz(mask);
        mask &= mask - 1;
        if (keys[j] < thr && band.pass(i + j)) {
          col.push(keys[j], i + j);
          thr = col.threshold();
        }
      }
    }
  }
  for (; i < end; ++i) {
    if constexpr (F::kActive)
      if (!filter.allows(i)) continue;
    const Key key = m.one(codes + i * nb, i);
    if (key < thr && band.pass(i)) {
      col.push(key, i);
      thr = col.threshold();
    }
  }
}

// IVF rows with blocked codes (fast scan): whole blocks of kScanBlock rows, the rows of a block
// outside [begin, end) masked off (a list starts and ends anywhere in its first and last block).
template <class M, class C, class F>
__attribute__((noinline)) void scan_blocks(const M& metric, int64_t begin, int64_t end, C& col,
                                           F filter) {
  const M m = metric;
  using Key = typename M::Key;
  Key thr = col.threshold();
  alignas(32) Key keys[kScanBlock];
  for (int64_t g0 = begin & ~int64_t(kScanBlock - 1); g0 < end; g0 += kScanBlock) {
    uint32_t allowed = 0xFFFF;
    if (g0 < begin) allowed &= 0xFFFFu << (begin - g0);
    if (g0 + kScanBlock > end) allowed &= (1u << (end - g0)) - 1;
    if constexpr (F::kActive) {
      allowed &= filter.pre8(g0) | filter.pre8(g0 + 8) << 8;
      if (!allowed) continue;
    }
    uint32_t mask = m.block_keys(g0, thr, keys) & allowed;
    while (__builtin_expect(mask != 0, 0)) {
      const int j = __builtin_ctz(mask);
      mask &= mask - 1;
      if (keys[j] < thr) {
        col.push(keys[j], g0 + j);
        thr = col.threshold();
      }
    }
  }
}

// The first stage's call: a filter and a band that may be absent, checked once per call here so
// that the unfiltered and the filtered scans run loops without a null test (measured: the test
// inside the loop cost 6-12% of the scan); only the pivot band's research path checks both.
template <class M, class C>
HP_INLINE void scan_range(const M& m, const uint8_t* codes, int64_t nb, int64_t begin, int64_t end,
                          int64_t readable, C& col, const BitFilter& filter,
                          const PivotBand& band) {
  if constexpr (M::kIsHamming) {  // the pivot band filters Hamming scans only (plan.py)
    if (band.table) {
      scan_range<M, C, BitFilter, PivotBand>(m, codes, nb, begin, end, readable, col, filter, band);
      return;
    }
  }
  if constexpr (M::kIsList) {
    if (m.blocked) {
      if (filter.w)
        scan_blocks(m, begin, end, col, AllowedBits{filter.w});
      else
        scan_blocks(m, begin, end, col, NoFilter{});
      return;
    }
  }
  if (filter.w)
    scan_range(m, codes, nb, begin, end, readable, col, AllowedBits{filter.w}, NoBand{});
  else
    scan_range(m, codes, nb, begin, end, readable, col, NoFilter{}, NoBand{});
}

// Rows given by a list (increasing), their codes gathered.
template <class M, class C, class B>
HP_INLINE void scan_list(const M& m, const uint8_t* codes, int64_t nb, const int64_t* rows,
                         int64_t n, C& col, const B& band) {
  using Key = typename M::Key;
  Key thr = col.threshold();
  for (int64_t j = 0; j < std::min<int64_t>(n, kGatherAhead); ++j)
    __builtin_prefetch(codes + rows[j] * nb);
  for (int64_t j = 0; j < n; ++j) {
    if (j + kGatherAhead < n) __builtin_prefetch(codes + rows[j + kGatherAhead] * nb);
    const int64_t r = rows[j];
    const Key key = m.one(codes + r * nb, r);
    if (key < thr && band.pass(r)) {
      col.push(key, r);
      thr = col.threshold();
    }
  }
}

}  // namespace
}  // namespace hashpivot
