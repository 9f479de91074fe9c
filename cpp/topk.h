// Exact top-k of keys (smaller is better: Hamming distances, quantized asymmetric distances, or
// negated float scores), ties broken by the smaller row, whatever order rows arrive in or how a
// query's rows are split between threads: every collector returns the k smallest (key, row).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "codes.h"

namespace hashpivot {

template <class K>
struct Scored {
  K key;
  int64_t row;
};
template <class K>
HP_INLINE bool operator<(const Scored<K>& a, const Scored<K>& b) {
  return a.key < b.key || (a.key == b.key && a.row < b.row);
}

// The smallest key above k that a collector must still admit so rows tied at k can enter.
HP_INLINE int32_t key_after(int32_t k) { return k + 1; }
HP_INLINE float key_after(float k) {
  return std::nextafter(k, std::numeric_limits<float>::infinity());
}

// The k smallest of per-part results, sorted.
template <class K>
void keep_smallest(std::vector<Scored<K>>& items, size_t k);
template <class K>
void select_smallest(std::vector<Scored<K>>& items, size_t k);
template <class K>
std::vector<Scored<K>> merge_parts(std::vector<std::vector<Scored<K>>>& parts, size_t k) {
  std::vector<Scored<K>> all = std::move(parts[0]);
  for (size_t p = 1; p < parts.size(); ++p) all.insert(all.end(), parts[p].begin(), parts[p].end());
  keep_smallest(all, k);
  return all;
}

constexpr size_t kBinnedSelectMin = 256;  // below this many items nth_element alone is as fast
constexpr int kSelectBins = 1024;         // the most bins; n items use n / kItemsPerBin of them
constexpr int kItemsPerBin = 2;  // clearing 1,024 bins cost more than a shrink's ~400 items

// Moves the m smallest (key, row) of items[0, n) to items[0, m), in no particular order (what
// lies beyond m is left unspecified). One pass bins the keys linearly between their min and max
// (a monotone map, so each bin below the m-th item's bin is taken whole), nth_element orders
// only that bin: std::nth_element alone mispredicts about half of its comparisons (27 of the
// 45 us a query took to pick 1 of 4,000 Hamming partitions, perf).
template <class K>
void select_front(Scored<K>* items, size_t n, size_t m) {
  if (m == 0 || m >= n) return;
  if (n < kBinnedSelectMin) {
    std::nth_element(items, items + m, items + n);
    return;
  }
  float lo = static_cast<float>(items[0].key), hi = lo;
  for (size_t i = 1; i < n; ++i) {
    const float v = static_cast<float>(items[i].key);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const int bins = static_cast<int>(std::min<size_t>(kSelectBins, n / kItemsPerBin));
  const float scale = (bins - 1) / (hi - lo);
  if (!(hi > lo) || !std::isfinite(hi - lo) || !std::isfinite(scale)) {  // one key, or inf
    std::nth_element(items, items + m, items + n);
    return;
  }
  auto bin = [&](K key) {
    return std::min(bins - 1, static_cast<int>((static_cast<float>(key) - lo) * scale));
  };
  uint32_t counts[kSelectBins];
  std::fill(counts, counts + bins, 0u);
  for (size_t i = 0; i < n; ++i) ++counts[bin(items[i].key)];
  int edge = 0;  // the bin that holds the m-th smallest
  size_t below = 0;
  while (below + counts[edge] < m) below += counts[edge++];
  thread_local std::vector<Scored<K>> tied;
  tied.resize(n);
  size_t front = 0, n_tied = 0;
  // Branch-free (each item written, the cursor advanced by the test): about half the items of
  // a reservoir shrink go each way, so a branch mispredicted on every other one.
  for (size_t i = 0; i < n; ++i) {  // front <= i: an item is read before its place is written
    const Scored<K> item = items[i];
    const int b = bin(item.key);
    items[front] = item;
    front += b < edge;
    tied[n_tied] = item;
    n_tied += b == edge;
  }
  const size_t rest = m - below;
  if (rest < n_tied) std::nth_element(tied.begin(), tied.begin() + rest, tied.begin() + n_tied);
  std::copy(tied.begin(), tied.begin() + rest, items + below);
}

// The k smallest of `items` (any order), sorted: a selection, then a sort of the k (a partial
// sort's heap costs n log k, measured at a quarter of an IVF search with k in the thousands).
template <class K>
void select_smallest(std::vector<Scored<K>>& items, size_t k) {  // in no particular order
  const size_t m = std::min(k, items.size());
  select_front(items.data(), items.size(), m);
  items.resize(m);
}
template <class K>
void keep_smallest(std::vector<Scored<K>>& items, size_t k) {
  select_smallest(items, k);
  std::sort(items.begin(), items.end());
}

// Puts x in place of a max-heap's largest element with one sift-down (pop_heap + push_heap
// would walk the heap twice).
template <class K>
HP_INLINE void replace_top(std::vector<Scored<K>>& h, const Scored<K>& x) {
  const size_t n = h.size();
  size_t i = 0;
  for (size_t c = 1; c < n; c = 2 * i + 1) {
    if (c + 1 < n && h[c] < h[c + 1]) ++c;
    if (!(x < h[c])) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

// Max-heap of the k best; rows must arrive in increasing order (a later row never wins a tie),
// so a row enters only when key < threshold().
template <class K>
class HeapTopK {
 public:
  using Key = K;
  void reset(int k, K none) {
    k_ = k;
    heap_.clear();
    heap_.reserve(k);
    thr_ = none;
  }
  HP_INLINE K threshold() const { return thr_; }
  HP_INLINE void push(K key, int64_t row) {
    if (static_cast<int>(heap_.size()) < k_) {
      heap_.push_back({key, row});
      std::push_heap(heap_.begin(), heap_.end());
      if (static_cast<int>(heap_.size()) == k_) thr_ = heap_.front().key;
      return;
    }
    replace_top(heap_, {key, row});
    thr_ = heap_.front().key;
  }
  std::vector<Scored<K>> take() {
    std::sort(heap_.begin(), heap_.end());
    return std::move(heap_);
  }

 private:
  int k_ = 0;
  K thr_{};
  std::vector<Scored<K>> heap_;
};

// Like HeapTopK, but rows may arrive in any order (partitions visited nearest first): rows tied
// with the current k-th key are let through the threshold and the smaller (key, row) wins.
template <class K>
class TieHeap {
 public:
  using Key = K;
  void reset(int k, K none) {
    k_ = k;
    heap_.clear();
    heap_.reserve(std::min(k, 1 << 20));
    thr_ = none;
  }
  HP_INLINE K threshold() const { return thr_; }
  HP_INLINE void push(K key, int64_t row) {
    const Scored<K> x{key, row};
    if (static_cast<int>(heap_.size()) < k_) {
      heap_.push_back(x);
      std::push_heap(heap_.begin(), heap_.end());
    } else {
      if (!(x < heap_.front())) return;
      replace_top(heap_, x);
    }
    if (static_cast<int>(heap_.size()) == k_) thr_ = key_after(heap_.front().key);
  }
  bool full() const { return static_cast<int>(heap_.size()) == k_; }
  K kth() const { return heap_.front().key; }  // valid when full()
  std::vector<Scored<K>> take() {
    std::sort(heap_.begin(), heap_.end());
    return std::move(heap_);
  }

 private:
  int k_ = 0;
  K thr_{};
  std::vector<Scored<K>> heap_;
};

// Counting select over the possible integer keys 0..max_key (faiss' HCounterState idea), for a
// large k: thr_ is the smallest t with at least k accepted rows at key <= t, so only key < thr_
// can still enter; accepted rows go to a buffer compacted to the k best when it grows. Rows in
// increasing order, like HeapTopK.
class CountingTopK {
 public:
  using Key = int32_t;
  void reset(int k, int32_t none) {
    k_ = k;
    counts_.assign(none + 1, 0);
    // the buffer is written by index, not push_back: a vector call that the inliner leaves out
    // of a large scan loop costs a fifth of the scan (measured with perf)
    buf_.resize(kGrow * static_cast<size_t>(k) + 16);
    n_ = 0;
    thr_ = none;
    cum_thr_ = 0;
  }
  HP_INLINE int32_t threshold() const { return thr_; }
  HP_INLINE void push(int32_t key, int64_t row) {
    buf_[n_++] = {key, row};
    ++counts_[key];
    ++cum_thr_;  // key < thr_, so it counts towards cum(thr_)
    while (cum_thr_ - counts_[thr_] >= k_) {
      cum_thr_ -= counts_[thr_];
      --thr_;
    }
    if (n_ == buf_.size()) compact();
  }
  std::vector<Scored<int32_t>> take() {
    compact();
    buf_.resize(n_);
    std::sort(buf_.begin(), buf_.end());
    if (static_cast<int>(buf_.size()) > k_) buf_.resize(k_);
    return std::move(buf_);
  }

 private:
  static constexpr int kGrow = 4;  // buffer up to 4k rows between compactions

  // Keeps rows with key < thr_ and the first (in row order) rows with key == thr_ still needed.
  void compact() {
    int64_t room_at_thr = k_ - (cum_thr_ - counts_[thr_]);
    size_t out = 0;
    for (size_t j = 0; j < n_; ++j) {
      const Scored<int32_t>& s = buf_[j];
      if (s.key < thr_ || (s.key == thr_ && room_at_thr-- > 0)) buf_[out++] = s;
    }
    n_ = out;
    int64_t kept_at_thr = 0;  // counts above thr_ no longer matter; at thr_ only the kept ones
    for (size_t j = 0; j < out; ++j) kept_at_thr += (buf_[j].key == thr_);
    cum_thr_ -= counts_[thr_] - kept_at_thr;
    counts_[thr_] = kept_at_thr;
  }

  int k_ = 0;
  int32_t thr_ = 0;
  int64_t cum_thr_ = 0;
  size_t n_ = 0;
  std::vector<int64_t> counts_;
  std::vector<Scored<int32_t>> buf_;
};

// Every row with key <= radius, in arrival order (range search: the radius is inclusive).
class RangeCollector {
 public:
  using Key = int32_t;
  explicit RangeCollector(int32_t radius) : thr_(radius + 1) {}
  HP_INLINE int32_t threshold() const { return thr_; }
  HP_INLINE void push(int32_t key, int64_t row) { out_.push_back({key, row}); }
  std::vector<Scored<int32_t>>& items() { return out_; }

 private:
  int32_t thr_;
  std::vector<Scored<int32_t>> out_;
};

// The k best of a stream for a large k (faiss' ReservoirTopN idea): rows below the threshold
// go to a buffer of 2k; a full buffer is cut to its k smallest (key, row) by nth_element and the
// threshold drops to the k-th key, so a push costs O(1) amortised instead of a heap's log k.
// Rows in increasing order, like HeapTopK (a later row never wins a tie).
template <class K>
class ReservoirTopK {
 public:
  using Key = K;
  void reset(int k, K none) {
    k_ = k;
    buf_.resize(2 * static_cast<size_t>(k) + 16);
    n_ = 0;
    thr_ = none;
  }
  HP_INLINE K threshold() const { return thr_; }
  HP_INLINE void push(K key, int64_t row) {
    buf_[n_++] = {key, row};
    if (n_ == buf_.size()) shrink();
  }
  std::vector<Scored<K>> take() {  // the k best in no particular order (a re-score follows)
    buf_.resize(n_);
    select_smallest(buf_, static_cast<size_t>(k_));
    return std::move(buf_);
  }

 private:
  void shrink() {
    select_front(buf_.data(), n_, k_);
    n_ = k_;
    thr_ = std::max_element(buf_.begin(), buf_.begin() + n_)->key;  // a later row must beat it
  }

  int k_ = 0;
  K thr_{};
  size_t n_ = 0;
  std::vector<Scored<K>> buf_;
};

constexpr int kHeapMaxK = 64;  // above this the counting select beats the heap (faiss' choice)

}  // namespace hashpivot
