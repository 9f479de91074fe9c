// Exact top-k of integer distances: a max-heap for small k, a counting select for large k.
// Both are fed rows in increasing id order, so a later row never wins a tie (faiss' order).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "codes.h"

namespace hashpivot {

struct Neighbor {
  int32_t d;
  int64_t id;
};
HP_INLINE bool operator<(const Neighbor& a, const Neighbor& b) {
  return a.d < b.d || (a.d == b.d && a.id < b.id);
}

// Rows [begin, end) of the code table.
struct RowRange {
  int64_t begin, end;
};

// Puts x in place of a max-heap's largest element with one sift-down (pop_heap + push_heap
// would walk the heap twice).
HP_INLINE void replace_top(std::vector<Neighbor>& h, const Neighbor& x) {
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

// Writes `items` (already sorted) to D/I, padding with (n_bits + 1, -1) like faiss.
inline void write_padded(const std::vector<Neighbor>& items, int k, int32_t pad_d, int32_t* D,
                         int64_t* I) {
  const int m = std::min<int>(k, static_cast<int>(items.size()));
  for (int j = 0; j < m; ++j) {
    D[j] = items[j].d;
    I[j] = items[j].id;
  }
  for (int j = m; j < k; ++j) {
    D[j] = pad_d;
    I[j] = -1;
  }
}

// Max-heap of the k best (d, id); threshold() is the distance a new row must beat.
class HeapTopK {
 public:
  void reset(int k, int n_bits) {
    k_ = k;
    heap_.clear();
    heap_.reserve(k);
    thr_ = n_bits + 1;  // every real distance is <= n_bits
    none_ = n_bits + 1;
  }
  HP_INLINE int32_t threshold() const { return thr_; }
  HP_INLINE void push(int32_t d, int64_t id) {
    if (static_cast<int>(heap_.size()) < k_) {
      heap_.push_back({d, id});
      std::push_heap(heap_.begin(), heap_.end());
      if (static_cast<int>(heap_.size()) == k_) thr_ = heap_.front().d;
      return;
    }
    replace_top(heap_, {d, id});
    thr_ = heap_.front().d;
  }
  std::vector<Neighbor> take() {
    std::sort(heap_.begin(), heap_.end());
    return std::move(heap_);
  }
  void finish(int32_t* D, int64_t* I) {
    auto items = take();
    write_padded(items, k_, none_, D, I);
  }

 private:
  int k_ = 0;
  int32_t thr_ = 0, none_ = 0;
  std::vector<Neighbor> heap_;
};

// Counting select over the n_bits + 1 possible distances (faiss' HCounterState idea):
// thr_ is the smallest t with at least k accepted rows at distance <= t, so only d < thr_ can
// still enter; accepted rows go to a buffer compacted to the k best when it grows.
class CountingTopK {
 public:
  void reset(int k, int n_bits) {
    k_ = k;
    n_bits_ = n_bits;
    counts_.assign(n_bits + 2, 0);
    buf_.clear();
    buf_.reserve(std::min<int64_t>(4 * static_cast<int64_t>(k) + 16, 1 << 20));
    thr_ = n_bits + 1;
    cum_thr_ = 0;
  }
  HP_INLINE int32_t threshold() const { return thr_; }
  HP_INLINE void push(int32_t d, int64_t id) {
    buf_.push_back({d, id});
    ++counts_[d];
    ++cum_thr_;  // d < thr_, so it counts towards cum(thr_)
    while (cum_thr_ - counts_[thr_] >= k_) {
      cum_thr_ -= counts_[thr_];
      --thr_;
    }
    if (buf_.size() >= 4 * static_cast<size_t>(k_) + 16) compact();
  }
  std::vector<Neighbor> take() {
    compact();
    std::sort(buf_.begin(), buf_.end());
    if (static_cast<int>(buf_.size()) > k_) buf_.resize(k_);
    return std::move(buf_);
  }
  void finish(int32_t* D, int64_t* I) {
    auto items = take();
    write_padded(items, k_, n_bits_ + 1, D, I);
  }

 private:
  // Keeps rows with d < thr_ and the first (in id order) rows with d == thr_ still needed.
  void compact() {
    int64_t below = cum_thr_ - counts_[thr_];
    int64_t room_at_thr = k_ - below;
    size_t out = 0;
    for (size_t j = 0; j < buf_.size(); ++j) {
      const Neighbor& nb = buf_[j];
      if (nb.d < thr_ || (nb.d == thr_ && room_at_thr-- > 0)) buf_[out++] = nb;
    }
    buf_.resize(out);
    // Counts above thr_ no longer matter; those at thr_ now mean only the kept ones.
    int64_t kept_at_thr = 0;
    for (size_t j = 0; j < out; ++j) kept_at_thr += (buf_[j].d == thr_);
    cum_thr_ -= counts_[thr_] - kept_at_thr;
    counts_[thr_] = kept_at_thr;
  }

  int k_ = 0, n_bits_ = 0;
  int32_t thr_ = 0;
  int64_t cum_thr_ = 0;
  std::vector<int64_t> counts_;
  std::vector<Neighbor> buf_;
};

// Merges per-thread sorted partial results into the global k best.
inline std::vector<Neighbor> merge_topk(std::vector<std::vector<Neighbor>>& parts, int k) {
  if (parts.size() == 1) return std::move(parts[0]);  // already sorted and at most k long
  std::vector<Neighbor> all;
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  const size_t m = std::min<size_t>(k, all.size());
  std::partial_sort(all.begin(), all.begin() + m, all.end());
  all.resize(m);
  return all;
}

// Like HeapTopK, but rows may arrive in any order (partitions visited nearest first): rows at
// the current k-th distance are let through the threshold and the smaller (d, row) wins.
class TieHeap {
 public:
  void reset(int k, int n_bits) {
    k_ = k;
    heap_.clear();
    heap_.reserve(std::min(k, 1 << 20));
    none_ = n_bits + 1;
    thr_ = none_;
  }
  HP_INLINE int32_t threshold() const { return thr_; }
  HP_INLINE void push(int32_t d, int64_t id) {
    const Neighbor nb{d, id};
    if (static_cast<int>(heap_.size()) < k_) {
      heap_.push_back(nb);
      std::push_heap(heap_.begin(), heap_.end());
    } else {
      if (!(nb < heap_.front())) return;
      replace_top(heap_, nb);
    }
    if (static_cast<int>(heap_.size()) == k_) thr_ = heap_.front().d + 1;  // ties still enter
  }
  bool full() const { return static_cast<int>(heap_.size()) == k_; }
  int32_t kth() const { return heap_.front().d; }  // valid when full()
  std::vector<Neighbor> take() {
    std::sort(heap_.begin(), heap_.end());
    return std::move(heap_);
  }

 private:
  int k_ = 0;
  int32_t thr_ = 0, none_ = 0;
  std::vector<Neighbor> heap_;
};

// Every row with d <= radius, in row order (range search: the radius is inclusive).
class RangeCollector {
 public:
  explicit RangeCollector(int radius) : thr_(radius + 1) {}
  HP_INLINE int32_t threshold() const { return thr_; }
  HP_INLINE void push(int32_t d, int64_t id) { out_.push_back({d, id}); }
  std::vector<Neighbor>& items() { return out_; }

 private:
  int32_t thr_;
  std::vector<Neighbor> out_;
};

constexpr int kHeapMaxK = 64;  // above this the counting select wins

}  // namespace hashpivot
