// What one search reads: an immutable version of the rows (a snapshot) and the plan of the
// search. The views hold raw pointers into arrays that bindings.cpp validated once, when the
// snapshot was made, and keeps alive; nothing here is checked again per search.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace hashpivot {

// Errors the bindings translate into hashpivot's Python exceptions.
struct InputError : std::invalid_argument {  // -> InvalidInputError
  using std::invalid_argument::invalid_argument;
};
struct DtypeError : std::invalid_argument {  // -> InvalidTypeError
  using std::invalid_argument::invalid_argument;
};
struct NonFiniteError : InputError {  // -> NonFiniteError
  using InputError::InputError;
};
struct ZeroVectorError : InputError {  // -> ZeroVectorError
  using InputError::InputError;
};

struct CodeView {
  const uint8_t* data = nullptr;
  int64_t n = 0;
  int nbytes = 0;
  int n_bits() const { return nbytes * 8; }
};

// z = (x - mean) @ proj: the float query projection (mean may be absent: no centring).
struct Transform {
  const float* mean = nullptr;
  const float* proj = nullptr;  // (dim, n_bits); with `block`, (n_bits / block, dim, block)
  int dim = 0;
  int n_bits = 0;
  int block = 0;  // 0: row-major; else columns in contiguous blocks of this many
  bool active() const { return proj != nullptr; }
};

// Pivots and every row's distance to each (n, P) table, uint8 or uint16 (n_bits > 255).
struct PivotTable {
  const uint8_t* pivots = nullptr;  // (P, nbytes)
  const void* table = nullptr;
  bool wide = false;
  int P = 0;
};

// Flat layout: rows sorted by their distance to the first `levels` pivots, cell starts in
// offsets ((n_bits + 1)^levels + 1 entries).
inline int64_t cell_key(int64_t d0, int64_t d1, int levels, int n_bits) {
  return levels == 1 ? d0 : d0 * (n_bits + 1) + d1;
}
struct SortedCells {
  const int64_t* offsets = nullptr;
  int levels = 0;
};

// Partitioned layout: rows grouped by the nearest centre code, each group ordered by the
// distance to its centre (cdist), with its covering radius.
struct HammingPartitions {
  const uint8_t* centres = nullptr;  // (C, nbytes)
  int64_t C = 0;
  const int64_t* offsets = nullptr;  // C + 1
  const int32_t* radius = nullptr;   // C
  const void* cdist = nullptr;       // n, uint8 or uint16 like the pivot table
  bool wide = false;
};

// IVF layout: rows grouped by the nearest float centre; codes are of the residual r = x - c and
// a row's score is <q, c> + bias + factor * <z, 2b - 1>. The bias, <c, r> - factor <W^T c, 2b - 1>,
// puts the centre's exact share of <q, r> in place of its estimate: the code then estimates
// <q - c, r>, whose error scales with |q - c| instead of |q| (python/hashpivot/layouts/ivf.py).
struct FloatLists {
  const float* centres = nullptr;          // (C, dim) as given; a search reads the levels
  const uint8_t* centre_blocks = nullptr;  // the int8 levels in blocks (centres.h)
  const float* centre_steps = nullptr;     // C: centre g ~ centre_steps[g] * its levels
  int64_t C = 0;
  int dim = 0;
  const int64_t* offsets = nullptr;       // C + 1
  const float* factors = nullptr;         // n
  const float* biases = nullptr;          // n
  const uint16_t* row_lists = nullptr;    // n: each row's list (the re-score's base score)
  const uint8_t* blocked = nullptr;       // the codes in blocks of kScanBlock rows (asymmetric.h),
                                          // where the CPU has a fast-scan kernel; else null
  const float* radii = nullptr;           // C: each list's rms residual norm (null: none saved)
  const float* centre_norms = nullptr;    // C: |c|^2 (the bound's |q - c|)
  const uint8_t* error_levels = nullptr;  // n: |v| as error_norm() levels (null: none)
  // Extra bits (Extended RaBitQ): row r's levels l_j = sum_p 2^p (2 b_pj - 1) over its
  // extra_planes bit planes (lowest first, the top one a copy of its sign code), nbytes each at
  // extra + r * extra_planes * nbytes; its re-estimate of <q, x> is
  // <q, c> + extra_biases[r] + extra_factors[r] <z, l>. Read only for the rows re-estimated.
  const uint8_t* extra = nullptr;
  int extra_planes = 0;
  const float* extra_factors = nullptr;
  const float* extra_biases = nullptr;
};

// The estimate's error for query q is <q - c, v>, v = a W (2b - 1) - r (the row's error vector):
// for a direction of q - c uniform on the sphere (RaBitQ's random rotation) its standard deviation
// is |q - c| |v| / sqrt(dim). |v| is kept as a one-byte level on a log scale, rounded up:
// level l stands for 2^((l - kErrorLevelZero) / kErrorLevelsPerOctave) (9% steps from 2^-24 to
// 2^7.75), kErrorLevelNone for no bound (a row never pruned).
constexpr int kErrorLevelZero = 192;
constexpr int kErrorLevelsPerOctave = 8;
constexpr int kErrorLevelNone = 255;
inline float error_norm(int level) {
  return level >= kErrorLevelNone
             ? std::numeric_limits<float>::infinity()
             : std::ldexp(std::exp2(static_cast<float>(level % kErrorLevelsPerOctave) /
                                    kErrorLevelsPerOctave),
                          level / kErrorLevelsPerOctave - kErrorLevelZero / kErrorLevelsPerOctave);
}
// error_norm of every level, made once (the rerank reads one a candidate).
inline const float* error_norms() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int l = 0; l < 256; ++l) t[l] = error_norm(l);
    return t;
  }();
  return table.data();
}
// The smallest level whose norm is at least v (v >= 0; beyond the last finite level: none).
inline uint8_t error_level(float v) {
  if (!(v <= error_norm(kErrorLevelNone - 1))) return kErrorLevelNone;
  int l = static_cast<int>(std::ceil(std::log2(std::max(v, 1e-30f)) * kErrorLevelsPerOctave)) +
          kErrorLevelZero;
  l = std::max(l, 0);
  while (l > 0 && error_norm(l - 1) >= v) --l;  // log2's rounding either way
  while (error_norm(l) < v) ++l;
  return static_cast<uint8_t>(l);
}

enum class StoreType { kNone = 0, kFloat32 = 1, kFloat16 = 2, kInt8 = 3 };

// Stored vectors for the exact rerank (int8 rows are scale * values), in segments: add()
// appends one without copying (or re-mapping) the ones before. A row's vector sits at its
// slot (slots[row], or the row itself without slots): slot s lies in the first segment whose
// end exceeds s.
struct VectorSegment {
  const void* data = nullptr;
  const float* scales = nullptr;  // int8 only
  int64_t end = 0;                // slots before this segment's end (cumulative)
};
struct VectorStore {
  StoreType type = StoreType::kNone;
  int dim = 0;
  size_t row_bytes = 0;
  const int64_t* slots = nullptr;  // (n,): each row's slot; null: slot = row
  const VectorSegment* segments = nullptr;
  int n_segments = 0;

  // Row r's stored vector and (int8) its scale.
  const void* row(int64_t r, float* scale) const {
    int64_t s = slots ? slots[r] : r;
    const VectorSegment* g = segments;
    if (n_segments > 1) {  // few segments (add() merges them geometrically): binary search
      int lo = 0, hi = n_segments - 1;
      while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (segments[mid].end > s)
          hi = mid;
        else
          lo = mid + 1;
      }
      g = segments + lo;
      if (lo) s -= segments[lo - 1].end;
    }
    if (g->scales) *scale = g->scales[s];
    return static_cast<const char*>(g->data) + s * row_bytes;
  }
};

struct SnapshotView {
  CodeView codes;
  const int64_t* ids = nullptr;    // user id of each row (null: ids are rows)
  const int32_t* ids32 = nullptr;  // the same as int32, where every id fits: what a search reads
  Transform transform;
  PivotTable pivots;
  SortedCells cells;
  HammingPartitions parts;
  FloatLists lists;
  VectorStore store;
};

enum class Scoring { kHamming = 0, kAsymmetric = 1 };
enum class Source { kAll = 0, kBand = 1, kPartitions = 2, kLists = 3, kAllowed = 4 };

// One search, as python/hashpivot/plan.py made it: the first stage ranks rows from `source` by
// `scoring` (by Hamming when hamming_first) and keeps `pool`; an asymmetric search re-scores the
// pool exactly and keeps `candidates`; `rerank` scores those with the stored vectors.
struct Plan {
  int k = 10;
  Scoring scoring = Scoring::kAsymmetric;
  Source source = Source::kAll;
  int pool = 0;
  int candidates = 0;
  bool hamming_first = false;
  int threshold = -1;      // pivot band t; -1: none
  int nprobe = 0;          // partitions or lists probed; 0 with partitions: exact
  int64_t probe_rows = 0;  // with a filter: probe lists until this many allowed rows were seen
  float probe_spread = 0;  // ivf lists are probed by <q, c> + probe_spread |q| radius
  int reestimate = 0;  // ivf with extra bits: rows the re-score keeps for the re-estimate (0: none)
  float bound = 0;  // ivf: rerank stops once no candidate's estimate + bound sigma beats the k-th
  bool rerank = false;
  bool exact_allowed = false;   // the allowed rows are few: rerank them all, no code stage
  bool quantized_only = false;  // asymmetric: return the first stage's quantized distances
  int threads = 0;
};

// Rows a filtered search may return: a bitmap over rows (one spare word at the end) and, for
// Source::kAllowed, the allowed rows in increasing order.
struct RowFilter {
  const uint64_t* bits = nullptr;
  const int64_t* rows = nullptr;
  int64_t n_rows = 0;
  bool active() const { return bits != nullptr; }
};

// The queries of one call: float vectors (projected by the snapshot's transform), float
// projections given directly, or packed codes (Hamming search only).
struct Queries {
  int64_t n = 0;
  const float* vectors = nullptr;  // (n, dim)
  int dim = 0;
  bool normalize = false;              // cosine: each vector scaled to unit length first
  const float* projections = nullptr;  // (n, n_bits)
  const uint8_t* codes = nullptr;      // (n, nbytes)
  const int32_t* lo = nullptr;         // (n, P) pivot band bounds given directly (else computed
  const int32_t* hi = nullptr;         // from the snapshot's pivots and the plan's threshold)
};

struct Results {
  float* scores = nullptr;       // (n, k) when the output is float
  int32_t* distances = nullptr;  // (n, k) when it is Hamming distances
  int64_t* ids = nullptr;        // (n, k)
  int64_t scanned = 0;           // rows scored by the first stage, all queries
  int64_t reranked = 0;          // stored vectors the rerank read, all queries
};

}  // namespace hashpivot
