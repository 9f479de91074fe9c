// Every kernel on every instruction set this CPU has, against a plain brute force.
// Built with -DHASHPIVOT_SANITIZE=ON it runs under AddressSanitizer and UBSan (tests/test_sanitizers.py).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "dispatch.h"
#include "partition.h"
#include "search.h"

using namespace hashpivot;

static int failures = 0;
#define CHECK(cond, ...)                                    \
  do {                                                      \
    if (!(cond)) {                                          \
      ++failures;                                           \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                    \
      std::fprintf(stderr, "\n");                           \
      if (failures > 20) std::exit(1);                      \
    }                                                       \
  } while (0)

static int ref_dist(const uint8_t* a, const uint8_t* b, int nbytes) {
  int d = 0;
  for (int j = 0; j < nbytes; ++j) d += __builtin_popcount(static_cast<unsigned>(a[j] ^ b[j]));
  return d;
}

// Codes with many ties: random bytes from a small alphabet when `clustered`.
static std::vector<uint8_t> make_codes(std::mt19937_64& rng, int64_t n, int nbytes, bool clustered) {
  std::vector<uint8_t> v(n * nbytes);
  for (auto& b : v) b = clustered ? static_cast<uint8_t>((rng() % 3) * 0x55) : rng() & 0xFF;
  return v;
}

static void test_knn(std::mt19937_64& rng, int nbytes, int64_t n, int64_t nq, int k, bool clustered,
                     int threads) {
  auto codes = make_codes(rng, n, nbytes, clustered);
  auto queries = make_codes(rng, nq, nbytes, clustered);
  std::vector<int32_t> D(nq * k);
  std::vector<int64_t> I(nq * k);
  Codes c{codes.data(), n, nbytes};
  knn(queries.data(), nq, c, k, threads, D.data(), I.data());
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<Neighbor> all;
    for (int64_t i = 0; i < n; ++i)
      all.push_back({ref_dist(queries.data() + q * nbytes, codes.data() + i * nbytes, nbytes), i});
    std::sort(all.begin(), all.end());
    for (int j = 0; j < k; ++j) {
      const int32_t wd = j < n ? all[j].d : nbytes * 8 + 1;
      const int64_t wi = j < n ? all[j].id : -1;
      CHECK(D[q * k + j] == wd && I[q * k + j] == wi,
            "knn isa=%s nbytes=%d n=%ld k=%d q=%ld j=%d got (%d,%ld) want (%d,%ld)",
            isa_name(kernels().isa), nbytes, (long)n, k, (long)q, j, D[q * k + j],
            (long)I[q * k + j], wd, (long)wi);
    }
  }
}

static void test_distances_and_range(std::mt19937_64& rng, int nbytes, int64_t n) {
  auto codes = make_codes(rng, n, nbytes, false);
  auto q = make_codes(rng, 2, nbytes, false);
  Codes c{codes.data(), n, nbytes};
  std::vector<int32_t> out(2 * n);
  distance_matrix(q.data(), 2, c, 2, out.data());
  for (int64_t j = 0; j < 2; ++j)
    for (int64_t i = 0; i < n; ++i)
      CHECK(out[j * n + i] == ref_dist(q.data() + j * nbytes, codes.data() + i * nbytes, nbytes),
            "distances nbytes=%d", nbytes);
  const int radius = nbytes * 4 - 2;
  auto res = range_search(q.data(), 2, c, radius, 2);
  for (int64_t j = 0; j < 2; ++j) {
    std::vector<Neighbor> want;
    for (int64_t i = 0; i < n; ++i) {
      int d = ref_dist(q.data() + j * nbytes, codes.data() + i * nbytes, nbytes);
      if (d <= radius) want.push_back({d, i});
    }
    std::sort(want.begin(), want.end());
    CHECK(res[j].size() == want.size(), "range size nbytes=%d", nbytes);
    for (size_t i = 0; i < std::min(want.size(), res[j].size()); ++i)
      CHECK(res[j][i].d == want[i].d && res[j][i].id == want[i].id, "range item");
  }
}

template <class T>
static void test_band(std::mt19937_64& rng, int P, int64_t n, int nbytes, int t, int k) {
  auto codes = make_codes(rng, n, nbytes, false);
  auto q = make_codes(rng, 1, nbytes, false);
  std::vector<T> table(n * P);
  for (auto& x : table) x = static_cast<T>(40 + rng() % 50);
  std::vector<int32_t> lo(P), hi(P);
  for (int p = 0; p < P; ++p) {
    int qd = 40 + rng() % 50;
    lo[p] = qd - t;
    hi[p] = qd + t;
  }
  Band band;
  band.table = table.data();
  band.wide = sizeof(T) == 2;
  band.P = P;
  band.lo = lo.data();
  band.hi = hi.data();
  std::vector<int64_t> want;
  for (int64_t i = 0; i < n; ++i) {
    bool ok = true;
    for (int p = 0; p < P; ++p) ok &= table[i * P + p] >= lo[p] && table[i * P + p] <= hi[p];
    if (ok) want.push_back(i);
  }
  auto got = band_filter_rows(band, 0, n, 2);
  CHECK(got == want, "band filter P=%d isa=%s got %zu want %zu", P, isa_name(kernels().isa),
        got.size(), want.size());
  // fused: top-k over passing rows only
  Codes c{codes.data(), n, nbytes};
  std::vector<int32_t> D(k);
  std::vector<int64_t> I(k);
  knn(q.data(), 1, c, k, 1, D.data(), I.data(), band);
  std::vector<Neighbor> all;
  for (int64_t r : want) all.push_back({ref_dist(q.data(), codes.data() + r * nbytes, nbytes), r});
  std::sort(all.begin(), all.end());
  for (int j = 0; j < k; ++j) {
    const int64_t wi = j < (int)all.size() ? all[j].id : -1;
    CHECK(I[j] == wi, "band knn P=%d j=%d got %ld want %ld", P, j, (long)I[j], (long)wi);
  }
}

// Partitioned exact search equals the flat scan; nprobe = C too; with a pivot band as well.
template <class T>
static void test_partition_typed(std::mt19937_64& rng, int nbytes, int64_t n, int C, int k) {
  auto codes = make_codes(rng, n, nbytes, true);
  auto q = make_codes(rng, 3, nbytes, true);
  // partitions: rows i % C, stored contiguously, ordered by distance to the centre (stable)
  std::vector<uint8_t> sorted(n * nbytes), centres(C * nbytes);
  std::vector<int64_t> off(C + 1, 0);
  std::vector<int32_t> radius(C, 0);
  std::vector<T> cdist(n);
  int64_t r = 0;
  for (int c = 0; c < C; ++c) {
    off[c] = r;
    std::copy(codes.begin() + (c % n) * nbytes, codes.begin() + (c % n + 1) * nbytes,
              centres.begin() + c * nbytes);
    std::vector<std::pair<int32_t, int64_t>> members;
    for (int64_t i = c; i < n; i += C)
      members.push_back({ref_dist(codes.data() + i * nbytes, centres.data() + c * nbytes, nbytes), i});
    std::stable_sort(members.begin(), members.end(),
                     [](auto a, auto b) { return a.first < b.first; });
    for (auto [d, i] : members) {
      std::copy(codes.begin() + i * nbytes, codes.begin() + (i + 1) * nbytes, sorted.begin() + r * nbytes);
      cdist[r++] = static_cast<T>(d);
      radius[c] = std::max(radius[c], d);
    }
  }
  off[C] = r;
  Codes cs{sorted.data(), n, nbytes};
  Partitions<T> P{centres.data(), C, off.data(), radius.data(), cdist.data()};
  std::vector<int32_t> D(3 * k), Df(3 * k);
  std::vector<int64_t> I(3 * k), If(3 * k);
  knn(q.data(), 3, cs, k, 1, Df.data(), If.data());
  for (int nprobe : {0, C}) {
    partition_knn(q.data(), 3, cs, P, PartitionBand<T>{}, k, nprobe, 2, D.data(), I.data(), nullptr);
    CHECK(D == Df && I == If, "partition nprobe=%d nbytes=%d k=%d", nprobe, nbytes, k);
  }
  // a pivot band (two pivots: the first and last code) inside partitions
  const int Pv = 2, t = nbytes * 2;
  std::vector<T> table(n * Pv);
  std::vector<int32_t> lo(3 * Pv), hi(3 * Pv);
  for (int64_t i = 0; i < n; ++i)
    for (int p = 0; p < Pv; ++p)
      table[i * Pv + p] = static_cast<T>(ref_dist(sorted.data() + i * nbytes, codes.data() + p * (n - 1) * nbytes, nbytes));
  for (int j = 0; j < 3; ++j)
    for (int p = 0; p < Pv; ++p) {
      const int32_t dq = ref_dist(q.data() + j * nbytes, codes.data() + p * (n - 1) * nbytes, nbytes);
      lo[j * Pv + p] = dq - t;
      hi[j * Pv + p] = dq + t;
    }
  Band band;
  band.table = table.data();
  band.wide = sizeof(T) == 2;
  band.P = Pv;
  band.lo = lo.data();
  band.hi = hi.data();
  knn(q.data(), 3, cs, k, 1, Df.data(), If.data(), band);
  partition_knn(q.data(), 3, cs, P, PartitionBand<T>{table.data(), Pv, lo.data(), hi.data()}, k, 0,
                2, D.data(), I.data(), nullptr);
  CHECK(D == Df && I == If, "banded partition nbytes=%d k=%d", nbytes, k);
  // asymmetric scan over every partition = the flat asymmetric scan (rows visited in order)
  std::normal_distribution<float> g;
  std::vector<float> z(nbytes * 8);
  for (auto& v : z) v = g(rng);
  const AsymQuery a = make_asym_query(z.data(), nbytes * 8);
  asym_knn(&a, 1, cs, k, 1, Df.data(), If.data());
  int64_t scanned = 0;
  asym_partition_knn(&a, 1, cs, centres.data(), C, off.data(), C, k, 2, D.data(), I.data(), &scanned);
  CHECK(std::equal(D.begin(), D.begin() + k, Df.begin()) && std::equal(I.begin(), I.begin() + k, If.begin()) &&
            scanned == n, "asymmetric partition scan nbytes=%d k=%d", nbytes, k);
}

static void test_partition(std::mt19937_64& rng, int nbytes, int64_t n, int C, int k) {
  if (nbytes * 8 <= 255)
    test_partition_typed<uint8_t>(rng, nbytes, n, C, k);
  test_partition_typed<uint16_t>(rng, nbytes, n, C, k);
}

// The quantized asymmetric scan against its definition, computed here byte by byte.
static void test_asym(std::mt19937_64& rng, int nbytes, int64_t n, int k) {
  auto codes = make_codes(rng, n, nbytes, false);
  const int n_bits = nbytes * 8;
  std::normal_distribution<float> g;
  std::vector<float> z(n_bits);
  for (auto& v : z) v = g(rng);
  const AsymQuery a = make_asym_query(z.data(), n_bits);
  std::vector<Neighbor> all;
  for (int64_t i = 0; i < n; ++i) {
    int s = 7 * n_bits;
    for (int j = 0; j < n_bits; ++j) {
      const int bit = (codes[i * nbytes + j / 8] >> (7 - j % 8)) & 1;
      const int w = j / 64, b = 8 * (j / 8 % 8) + 7 - j % 8;
      int v = 0;
      for (int p = 0; p < 4; ++p) v |= static_cast<int>((a.planes[p][w] >> b) & 1) << p;
      s -= bit * (v - 8);
    }
    all.push_back({s, i});
  }
  std::sort(all.begin(), all.end());
  std::vector<int32_t> D(k);
  std::vector<int64_t> I(k);
  Codes c{codes.data(), n, nbytes};
  asym_knn(&a, 1, c, k, 2, D.data(), I.data());
  for (int j = 0; j < k && j < n; ++j)
    CHECK(D[j] == all[j].d && I[j] == all[j].id, "asym isa=%s nbytes=%d j=%d got (%d,%ld) want (%d,%ld)",
          isa_name(kernels().isa), nbytes, j, D[j], (long)I[j], all[j].d, (long)all[j].id);
}

int main() {
  std::mt19937_64 rng(12345);
  int tested = 0;
  for (int level = 0; level <= static_cast<int>(best_isa()); ++level) {
    set_isa(static_cast<Isa>(level));
    for (int nbytes : {8, 16, 24, 32, 64, 128}) {
      for (int k : {1, 3, 10, 65, 300}) {
        test_knn(rng, nbytes, 517, 3, k, false, 1);
        test_knn(rng, nbytes, 517, 3, k, true, 2);
      }
      test_knn(rng, nbytes, 0, 2, 5, false, 1);
      test_knn(rng, nbytes, 7, 1, 20, false, 2);
      test_knn(rng, nbytes, 70000, 1, 10, true, 2);   // split across threads, ties
      test_knn(rng, nbytes, 70000, 1, 200, true, 2);  // counting select, split
      test_distances_and_range(rng, nbytes, 1031);
    }
    for (int nbytes : {8, 16, 32, 128}) {
      test_partition(rng, nbytes, 3000, 37, 10);
      test_partition(rng, nbytes, 500, 7, 70);
      test_asym(rng, nbytes, 777, 20);
      test_asym(rng, nbytes, 777, 100);
    }
    for (int P : {1, 3, 8, 16}) {
      test_band<uint8_t>(rng, P, 3001, 16, 12, 10);
      test_band<uint16_t>(rng, P, 3001, 32, 12, 100);
    }
    ++tested;
  }
  std::printf("%d passed, %d failed\n", tested, failures ? 1 : 0);
  return failures ? 1 : 0;
}
