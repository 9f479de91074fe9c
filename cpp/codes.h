// Packed binary codes: limits, loads and popcount policies shared by every kernel.
#pragma once
#include <cstdint>
#include <cstring>

// Hot helpers must inline into each ISA-specific caller so they compile with its target flags.
#define HP_INLINE inline __attribute__((always_inline))

namespace hashpivot {

// The one place these limits live: Python reads them from the compiled module.
constexpr int kMinBits = 64;
constexpr int kMaxBits = 1024;
constexpr int kMaxWords = kMaxBits / 64;
constexpr int kMaxPivots = 16;
constexpr int kMaxDim = 65536;          // embedding dimensions a snapshot accepts
constexpr int kMaxSegments = 64;        // store segments a snapshot accepts (add() merges them)
constexpr int64_t kMaxLists = 1 << 16;  // ivf lists (or partitions): a row's list fits uint16
constexpr int kMaxExtraBits = 3;        // ivf: bits a dimension beyond the sign (4 in all)
constexpr int kMaxSortedLevels = 2;     // pivots whose distance orders the flat layout's rows
// Pivot tables and centre distances are uint8 while every distance fits, uint16 beyond.
constexpr int kNarrowTableMaxBits = 255;
inline bool wide_table(int n_bits) { return n_bits > kNarrowTableMaxBits; }

// Codes are rows of n_bits / 8 bytes in np.packbits order; a distance ignores bit order.
HP_INLINE uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // codes need not be 8-byte aligned (numpy slices, mmap offsets)
  return v;
}

// Portable popcount for CPUs without POPCNT (SWAR, no libgcc call).
struct PopcountSwar {
  static HP_INLINE int count(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
  }
};

// Hardware POPCNT: only valid inside functions compiled with target("popcnt").
struct PopcountHw {
  static HP_INLINE int count(uint64_t x) { return __builtin_popcountll(x); }
};

// A query held in registers: W words when known at compile time, `words` otherwise.
template <int W>
struct QueryWords {
  uint64_t w[W > 0 ? W : kMaxWords];
  int words;
  HP_INLINE QueryWords(const uint8_t* q, int nwords) : words(W > 0 ? W : nwords) {
    for (int j = 0; j < words; ++j) w[j] = load_u64(q + 8 * j);
  }
};

template <class Pop, int W>
HP_INLINE int hamming(const QueryWords<W>& q, const uint8_t* code) {
  int d = 0;
  const int words = W > 0 ? W : q.words;
  for (int j = 0; j < words; ++j) d += Pop::count(q.w[j] ^ load_u64(code + 8 * j));
  return d;
}

// Bit j of a code (np.packbits order) is bit 7 - j % 8 of byte j / 8; in the little-endian
// 64-bit word holding that byte it is bit 8 * (j / 8 % 8) + 7 - j % 8.
HP_INLINE int word_bit(int j) { return 8 * (j / 8 % 8) + 7 - j % 8; }

}  // namespace hashpivot
