// The engine on every instruction set this CPU has, against plain brute force: Hamming top-k
// (heap and counting select, split across threads), range search, distance rows, the pivot
// band, exact partition search, the quantized asymmetric scan, IVF list scoring, filters.
// Built with -DHASHPIVOT_SANITIZE=ON it runs under AddressSanitizer and UBSan
// (tests/test_sanitizers.py).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "asymmetric.h"
#include "centres.h"
#include "dispatch.h"

using namespace hashpivot;

static int failures = 0, checks = 0;
#define CHECK(cond, ...)                                        \
  do {                                                          \
    ++checks;                                                   \
    if (!(cond)) {                                              \
      ++failures;                                               \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                        \
      std::fprintf(stderr, "\n");                               \
      if (failures > 20) std::exit(1);                          \
    }                                                           \
  } while (0)

static int ref_dist(const uint8_t* a, const uint8_t* b, int nbytes) {
  int d = 0;
  for (int j = 0; j < nbytes; ++j) d += __builtin_popcount(static_cast<unsigned>(a[j] ^ b[j]));
  return d;
}

// Codes with many ties: random bytes from a small alphabet when `clustered`.
static std::vector<uint8_t> make_codes(std::mt19937_64& rng, int64_t n, int nbytes,
                                       bool clustered) {
  std::vector<uint8_t> v(n * nbytes);
  for (auto& b : v) b = clustered ? static_cast<uint8_t>((rng() % 3) * 0x55) : rng() & 0xFF;
  return v;
}

// The k smallest (key, row) of `all`, padded like the engine.
template <class K>
static std::vector<Scored<K>> best(std::vector<Scored<K>> all, int k) {
  std::sort(all.begin(), all.end());
  if (static_cast<int>(all.size()) > k) all.resize(k);
  return all;
}

static void run(const SnapshotView& v, const Plan& p, const Queries& q, const RowFilter& f,
                std::vector<int32_t>* D, std::vector<float>* S, std::vector<int64_t>* I) {
  I->assign(q.n * p.k, -2);
  Results r;
  r.ids = I->data();
  if (D) {
    D->assign(q.n * p.k, -2);
    r.distances = D->data();
  } else {
    S->assign(q.n * p.k, 0);
    r.scores = S->data();
  }
  engine().search(v, p, q, f, r);
}

static void test_knn(std::mt19937_64& rng, int nbytes, int64_t n, int64_t nq, int k, bool clustered,
                     int threads, bool filtered) {
  auto codes = make_codes(rng, n, nbytes, clustered);
  auto queries = make_codes(rng, nq, nbytes, clustered);
  SnapshotView v;
  v.codes = {codes.data(), n, nbytes};
  Plan p;
  p.k = p.pool = p.candidates = k;
  p.scoring = Scoring::kHamming;
  p.threads = threads;
  Queries q;
  q.n = nq;
  q.codes = queries.data();
  std::vector<uint64_t> bits((n + 63) / 64 + 1, 0);
  RowFilter f;
  if (filtered) {
    for (int64_t i = 0; i < n; ++i)
      if (rng() % 3 == 0) bits[i >> 6] |= uint64_t(1) << (i & 63);
    f.bits = bits.data();
  }
  std::vector<int32_t> D;
  std::vector<int64_t> I;
  run(v, p, q, f, &D, nullptr, &I);
  for (int64_t qi = 0; qi < nq; ++qi) {
    std::vector<Scored<int32_t>> all;
    for (int64_t i = 0; i < n; ++i)
      if (!filtered || ((bits[i >> 6] >> (i & 63)) & 1))
        all.push_back(
            {ref_dist(queries.data() + qi * nbytes, codes.data() + i * nbytes, nbytes), i});
    auto want = best(all, k);
    for (int j = 0; j < k; ++j) {
      const bool ok = j < static_cast<int>(want.size());
      const int32_t wd = ok ? want[j].key : nbytes * 8 + 1;
      const int64_t wi = ok ? want[j].row : -1;
      CHECK(D[qi * k + j] == wd && I[qi * k + j] == wi,
            "knn isa=%s nbytes=%d n=%ld k=%d filtered=%d q=%ld j=%d got (%d,%ld) want (%d,%ld)",
            isa_name(engine().isa), nbytes, (long)n, k, filtered, (long)qi, j, D[qi * k + j],
            (long)I[qi * k + j], wd, (long)wi);
    }
  }
}

static void test_distances_and_range(std::mt19937_64& rng, int nbytes, int64_t n) {
  auto codes = make_codes(rng, n, nbytes, false);
  auto q = make_codes(rng, 2, nbytes, false);
  const CodeView c{codes.data(), n, nbytes};
  std::vector<int32_t> out(2 * n);
  engine().distances(q.data(), 2, c, 0, out.data());
  for (int64_t i = 0; i < n; ++i)
    CHECK(out[i] == ref_dist(q.data(), codes.data() + i * nbytes, nbytes), "distance row %ld",
          (long)i);
  const int radius = nbytes * 4 - 2;
  auto res = engine().range_search(q.data(), 2, c, radius, 2);
  std::vector<Scored<int32_t>> want;
  for (int64_t i = 0; i < n; ++i) {
    const int d = ref_dist(q.data(), codes.data() + i * nbytes, nbytes);
    if (d <= radius) want.push_back({d, i});
  }
  std::sort(want.begin(), want.end());
  CHECK(res[0].size() == want.size(), "range size %zu vs %zu", res[0].size(), want.size());
  for (size_t j = 0; j < std::min(want.size(), res[0].size()); ++j)
    CHECK(res[0][j].key == want[j].key && res[0][j].row == want[j].row, "range item %zu", j);
}

// Band source without sorted cells: every row, the band checked late; against the definition.
static void test_band(std::mt19937_64& rng, int P, int64_t n, int nbytes, int t, int k) {
  auto codes = make_codes(rng, n, nbytes, true);
  auto pivots = make_codes(rng, P, nbytes, true);
  auto query = make_codes(rng, 1, nbytes, true);
  std::vector<uint8_t> table(n * P);
  for (int64_t i = 0; i < n; ++i)
    for (int p = 0; p < P; ++p)
      table[i * P + p] = ref_dist(codes.data() + i * nbytes, pivots.data() + p * nbytes, nbytes);
  SnapshotView v;
  v.codes = {codes.data(), n, nbytes};
  v.pivots = {pivots.data(), table.data(), false, P};
  Plan p;
  p.k = p.pool = p.candidates = k;
  p.scoring = Scoring::kHamming;
  p.source = Source::kBand;
  p.threshold = t;
  Queries q;
  q.n = 1;
  q.codes = query.data();
  std::vector<int32_t> D;
  std::vector<int64_t> I;
  run(v, p, q, RowFilter{}, &D, nullptr, &I);
  std::vector<int> qd(P);
  for (int i = 0; i < P; ++i) qd[i] = ref_dist(query.data(), pivots.data() + i * nbytes, nbytes);
  std::vector<Scored<int32_t>> all;
  std::vector<int32_t> lo(P), hi(P);
  for (int i = 0; i < P; ++i) lo[i] = qd[i] - t, hi[i] = qd[i] + t;
  std::vector<int64_t> in_band;
  for (int64_t i = 0; i < n; ++i) {
    bool ok = true;
    for (int p2 = 0; p2 < P; ++p2) ok &= std::abs(qd[p2] - table[i * P + p2]) <= t;
    if (ok) {
      in_band.push_back(i);
      all.push_back({ref_dist(query.data(), codes.data() + i * nbytes, nbytes), i});
    }
  }
  auto want = best(all, k);
  for (int j = 0; j < static_cast<int>(want.size()); ++j)
    CHECK(I[j] == want[j].row && D[j] == want[j].key, "band j=%d", j);
  auto rows = engine().band_filter_rows(v.pivots, n, lo.data(), hi.data(), 0, n, 2);
  CHECK(rows == in_band, "band rows: %zu vs %zu", rows.size(), in_band.size());
}

// Exact search over partitions (rows grouped by centre, sorted by distance to it) equals the
// flat scan, ties included.
static void test_partitions(std::mt19937_64& rng, int nbytes, int64_t n, int C, int k) {
  auto raw = make_codes(rng, n, nbytes, true);
  auto centres = make_codes(rng, C, nbytes, true);
  std::vector<std::pair<std::pair<int, int>, int64_t>> key(n);  // (partition, cdist), old row
  for (int64_t i = 0; i < n; ++i) {
    int bp = 0, bd = 1 << 30;
    for (int c = 0; c < C; ++c) {
      const int d = ref_dist(raw.data() + i * nbytes, centres.data() + c * nbytes, nbytes);
      if (d < bd) bd = d, bp = c;
    }
    key[i] = {{bp, bd}, i};
  }
  std::sort(key.begin(), key.end());
  std::vector<uint8_t> codes(n * nbytes), cdist(n);
  std::vector<int64_t> offsets(C + 1, 0);
  std::vector<int32_t> radius(C, 0);
  for (int64_t i = 0; i < n; ++i) {
    std::copy(raw.begin() + key[i].second * nbytes, raw.begin() + (key[i].second + 1) * nbytes,
              codes.begin() + i * nbytes);
    cdist[i] = static_cast<uint8_t>(key[i].first.second);
    ++offsets[key[i].first.first + 1];
    radius[key[i].first.first] = std::max(radius[key[i].first.first], key[i].first.second);
  }
  for (int c = 0; c < C; ++c) offsets[c + 1] += offsets[c];
  SnapshotView v;
  v.codes = {codes.data(), n, nbytes};
  v.parts = {centres.data(), C, offsets.data(), radius.data(), cdist.data(), false};
  auto queries = make_codes(rng, 3, nbytes, true);
  Plan p;
  p.k = p.pool = p.candidates = k;
  p.scoring = Scoring::kHamming;
  p.source = Source::kPartitions;
  p.nprobe = 0;
  Queries q;
  q.n = 3;
  q.codes = queries.data();
  std::vector<int32_t> D;
  std::vector<int64_t> I;
  run(v, p, q, RowFilter{}, &D, nullptr, &I);
  for (int qi = 0; qi < 3; ++qi) {
    std::vector<Scored<int32_t>> all;
    for (int64_t i = 0; i < n; ++i)
      all.push_back({ref_dist(queries.data() + qi * nbytes, codes.data() + i * nbytes, nbytes), i});
    auto want = best(all, k);
    for (int j = 0; j < static_cast<int>(want.size()); ++j)
      CHECK(I[qi * k + j] == want[j].row && D[qi * k + j] == want[j].key,
            "exact partitions isa=%s q=%d j=%d got (%d,%ld) want (%d,%ld)", isa_name(engine().isa),
            qi, j, D[qi * k + j], (long)I[qi * k + j], want[j].key, (long)want[j].row);
  }
}

// select_front (binned select) against a full sort: float keys with ties, equal keys, huge
// and infinite keys, integer keys; every m from none to more than n.
static void test_select(std::mt19937_64& rng) {
  for (int64_t n : {0, 1, 255, 256, 1000, 5000})
    for (int kind = 0; kind < 5; ++kind) {
      std::vector<Scored<float>> items(n);
      std::vector<Scored<int32_t>> ints(n);
      for (int64_t i = 0; i < n; ++i) {
        float v = static_cast<float>(rng() % 50) * 0.01f;  // kind 0: many ties
        if (kind == 1) v = std::ldexp(static_cast<float>(rng() % 1000) - 500.0f, -3);
        if (kind == 2) v = 0.5f;
        if (kind == 3) v = (rng() % 7 == 0) ? 3e38f : -static_cast<float>(rng() % 100);
        if (kind == 4 && rng() % 100 == 0) v = std::numeric_limits<float>::infinity();
        items[i] = {v, (i * 7919) % std::max<int64_t>(n, 1)};
        ints[i] = {static_cast<int32_t>(rng() % 129), i};
      }
      auto want = items;
      auto want_int = ints;
      std::sort(want.begin(), want.end());
      std::sort(want_int.begin(), want_int.end());
      for (int64_t m : {int64_t(0), int64_t(1), n / 3, n - 1, n, n + 5}) {
        if (m < 0) continue;
        auto got = items;
        auto got_int = ints;
        select_smallest(got, static_cast<size_t>(m));
        select_smallest(got_int, static_cast<size_t>(m));
        std::sort(got.begin(), got.end());
        std::sort(got_int.begin(), got_int.end());
        const int64_t size = std::min(m, n);
        bool same = static_cast<int64_t>(got.size()) == size &&
                    static_cast<int64_t>(got_int.size()) == size;
        for (int64_t j = 0; same && j < size; ++j)
          same = got[j].key == want[j].key && got[j].row == want[j].row &&
                 got_int[j].key == want_int[j].key && got_int[j].row == want_int[j].row;
        CHECK(same, "select n=%ld m=%ld kind=%d", (long)n, (long)m, kind);
      }
    }
}

// The quantized asymmetric scan (first stage alone) against its definition.
// The quantized asymmetric distance of one code, bit by bit (asymmetric.h's definition).
static int32_t ref_asym(const AsymQuery& a, const uint8_t* code, int n_bits) {
  int32_t s = asym_bias(n_bits);
  for (int j = 0; j < n_bits; ++j) {
    const int bit = (code[j / 8] >> (7 - j % 8)) & 1;
    int level = 0;
    for (int pl = 0; pl < kAsymPlanes; ++pl)
      level |= ((a.planes[pl][j / 64] >> word_bit(j)) & 1) << pl;
    s += bit * (8 - level);
  }
  return s;
}

static void test_asym(std::mt19937_64& rng, int nbytes, int64_t n, int k) {
  auto codes = make_codes(rng, n, nbytes, false);
  const int n_bits = nbytes * 8;
  std::normal_distribution<float> g;
  std::vector<float> z(n_bits);
  for (auto& v : z) v = g(rng);
  SnapshotView v;
  v.codes = {codes.data(), n, nbytes};
  Plan p;
  p.k = p.pool = p.candidates = k;
  p.scoring = Scoring::kAsymmetric;
  p.quantized_only = true;
  Queries q;
  q.n = 1;
  q.projections = z.data();
  std::vector<int32_t> D;
  std::vector<int64_t> I;
  run(v, p, q, RowFilter{}, &D, nullptr, &I);
  const AsymQuery a = make_asym_query(z.data(), n_bits);
  std::vector<Scored<int32_t>> all;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = ref_asym(a, codes.data() + i * nbytes, n_bits);
    all.push_back({s, i});
  }
  auto want = best(all, k);
  for (int j = 0; j < static_cast<int>(want.size()); ++j)
    CHECK(D[j] == want[j].key && I[j] == want[j].row,
          "asym isa=%s nbytes=%d j=%d got (%d,%ld) want (%d,%ld)", isa_name(engine().isa), nbytes,
          j, D[j], (long)I[j], want[j].key, (long)want[j].row);
}

// Centre levels (centres.h): a vector is within half a step of its levels, a zero vector is
// zeros; the blocked layout holds each centre's levels (+128) where centre_dots_scalar reads
// them, padding included (C and dim not multiples of the block and group); the extreme sums at
// the largest dimension are exact in int32.
static void test_centre_levels(std::mt19937_64& rng) {
  std::normal_distribution<float> g;
  const int dim = 21, C = 19;
  std::vector<float> v(C * dim);
  for (auto& x : v) x = g(rng);
  std::vector<int8_t> q(dim);
  const float step = quantize_levels(v.data(), dim, q.data());
  for (int d = 0; d < dim; ++d)
    CHECK(std::fabs(v[d] - step * q[d]) <= 0.5001f * step, "level of %d", d);
  std::vector<uint8_t> blocks(centre_blocks(C) * centre_block_bytes(dim));
  std::vector<float> steps(C);
  block_centres(v.data(), C, dim, blocks.data(), steps.data());
  CentreQuery cq;
  cq.set(v.data() + 3 * dim, dim);  // centre 3 as the query
  for (int64_t b = 0; b < centre_blocks(C); ++b) {
    int32_t dots[kCentreBlock];
    centre_dots_scalar(blocks.data() + b * centre_block_bytes(dim), centre_groups(dim),
                       cq.levels.data(), dots);
    for (int c = 0; c < kCentreBlock; ++c) {
      const int64_t gc = b * kCentreBlock + c;
      int64_t want = 0;
      if (gc < C) {
        std::vector<int8_t> l(dim);
        CHECK(quantize_levels(v.data() + gc * dim, dim, l.data()) == steps[gc], "step %ld",
              (long)gc);
        for (int d = 0; d < dim; ++d) want += static_cast<int64_t>(l[d]) * cq.levels[d];
      }
      CHECK(dots[c] - kCentreOffset * cq.sum == want, "centre %ld", (long)gc);
    }
  }
  std::vector<uint8_t> top(centre_block_bytes(kMaxDim), 255);  // level 127 everywhere
  std::vector<int8_t> low(centre_groups(kMaxDim) * kCentreGroup, -kCentreLevels);
  int32_t dots[kCentreBlock];
  centre_dots_scalar(top.data(), centre_groups(kMaxDim), low.data(), dots);
  CHECK(dots[0] == -int64_t{255} * kCentreLevels * kMaxDim, "extreme sum");
  std::fill(v.begin(), v.end(), 0.0f);
  CHECK(
      quantize_levels(v.data(), dim, q.data()) == 0.0f && std::count(q.begin(), q.end(), 0) == dim,
      "zero vector");
}

// A random ivf snapshot: codes, centres (with the int8 levels bindings.cpp makes), factors,
// biases, lists of equal size starting anywhere in a block, z = q, one query x.
struct RandomLists {
  int n_bits, dim;
  int64_t n;
  std::vector<uint8_t> codes;
  std::vector<float> centres, factors, biases, proj, x, steps;
  std::vector<int64_t> offsets;
  std::vector<uint16_t> row_lists;
  std::vector<uint8_t> blocks;
  FloatLists lists;
  RandomLists(std::mt19937_64& rng, int nbytes, int64_t rows, int C)
      : n_bits(nbytes * 8), dim(nbytes * 8), n(rows), codes(make_codes(rng, rows, nbytes, false)) {
    std::normal_distribution<float> g;
    centres.resize(C * dim);
    factors.resize(n);
    biases.resize(n);
    proj.assign(dim * n_bits, 0);
    x.resize(dim);
    for (auto& v : centres) v = g(rng);
    for (auto& v : factors) v = 0.5f + std::fabs(g(rng));
    for (auto& v : biases) v = g(rng);
    for (int d = 0; d < dim; ++d) proj[d * n_bits + d] = 1;  // z = q
    for (auto& v : x) v = g(rng);
    offsets.resize(C + 1);
    for (int c = 0; c <= C; ++c) offsets[c] = n * c / C;
    row_lists.resize(n);
    for (int c = 0; c < C; ++c)
      for (int64_t r = offsets[c]; r < offsets[c + 1]; ++r) row_lists[r] = c;
    lists.centres = centres.data();
    lists.C = C;
    lists.dim = dim;
    blocks.resize(centre_blocks(C) * centre_block_bytes(dim));
    steps.resize(C);
    block_centres(centres.data(), C, dim, blocks.data(), steps.data());
    lists.centre_blocks = blocks.data();
    lists.centre_steps = steps.data();
    lists.offsets = offsets.data();
    lists.factors = factors.data();
    lists.biases = biases.data();
    lists.row_lists = row_lists.data();
  }
  SnapshotView view() const {
    SnapshotView v;
    v.codes = {codes.data(), n, n_bits / 8};
    v.transform = {nullptr, proj.data(), dim, n_bits};
    v.lists = lists;
    return v;
  }
};

// IVF lists: every list probed, no rerank: the exact list scores <q, c> + b + f <z, 2b - 1>.
static void test_lists(std::mt19937_64& rng, int nbytes, int64_t n, int C, int k, int nq) {
  const RandomLists R(rng, nbytes, n, C);
  const int n_bits = R.n_bits, dim = R.dim;
  const std::vector<uint8_t>& codes = R.codes;
  const std::vector<float>&factors = R.factors, &biases = R.biases, &centres = R.centres;
  const std::vector<int64_t>& offsets = R.offsets;
  const SnapshotView v = R.view();
  Plan p;
  p.k = p.candidates = k;
  p.pool = std::max(2 * k, k + 64);
  p.scoring = Scoring::kAsymmetric;
  p.source = Source::kLists;
  p.nprobe = C;
  std::normal_distribution<float> g;
  std::vector<float> xs(static_cast<size_t>(nq) * dim);  // nq queries: every centre tile shape
  for (auto& e : xs) e = g(rng);
  Queries q;
  q.n = nq;
  q.vectors = xs.data();
  q.dim = dim;
  std::vector<float> S;
  std::vector<int64_t> I;
  run(v, p, q, RowFilter{}, nullptr, &S, &I);
  const int kk = static_cast<int>(std::min<int64_t>(k, n));
  for (int qi = 0; qi < nq; ++qi) {
    const float* x = xs.data() + qi * dim;
    CentreQuery cq;  // <x, c> as the engine computes it: both in int8 levels, the sum exact
    cq.set(x, dim);
    std::vector<float> cs(C);
    std::vector<int8_t> l(dim);
    for (int c = 0; c < C; ++c) {
      quantize_levels(centres.data() + c * dim, dim, l.data());
      int64_t dot = 0;
      for (int d = 0; d < dim; ++d) dot += static_cast<int64_t>(l[d]) * cq.levels[d];
      cs[c] = cq.step * R.steps[c] * static_cast<float>(dot);
    }
    std::vector<Scored<float>> all;
    for (int64_t i = 0; i < n; ++i) {
      const int c = static_cast<int>(std::upper_bound(offsets.begin() + 1, offsets.end(), i) -
                                     offsets.begin() - 1);
      double bs = 0;
      for (int j = 0; j < n_bits; ++j)
        bs += x[j] * (((codes[i * nbytes + j / 8] >> (7 - j % 8)) & 1) ? 1 : -1);
      all.push_back({static_cast<float>(-(cs[c] + biases[i] + factors[i] * bs)), i});
    }
    auto want = best(all, k);
    const float* Sq = S.data() + qi * kk;
    const int64_t* Iq = I.data() + qi * kk;
    int same = 0;
    for (int j = 0; j < static_cast<int>(want.size()); ++j) {
      same += std::count(Iq, Iq + kk, want[j].row) > 0;
      const int64_t r = Iq[j];
      auto it =
          std::find_if(all.begin(), all.end(), [&](const Scored<float>& s) { return s.row == r; });
      CHECK(it != all.end() && std::fabs(-it->key - Sq[j]) < 1e-3f * (1 + std::fabs(Sq[j])),
            "list score isa=%s q=%d j=%d", isa_name(engine().isa), qi, j);
    }
    CHECK(same >= static_cast<int>(want.size()) - 1, "lists: %d of %zu", same, want.size());
  }
}

// Extra bit planes (Extended RaBitQ): every row re-estimated, no rerank, the scores are
// <x, c> (int8 levels) + extra bias + extra factor * sum_p 2^p <x, 2b_p - 1> over the planes, the
// sign code the top one. Then the rerank's error bound over a float32 store: rows without a
// bound are all reranked (the exact top-k); with random levels the scores stay exact, descending.
static void test_reestimate_and_bound(std::mt19937_64& rng, int nbytes, int planes) {
  const int64_t n = 700;
  const int C = 7, k = 10;
  RandomLists R(rng, nbytes, n, C);
  const int n_bits = R.n_bits, dim = R.dim;
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> g;
  const int stacked = planes + 1;  // the extra planes and a copy of the sign code on top
  std::vector<uint8_t> extra(static_cast<size_t>(n) * stacked * nbytes), levels(n);
  std::vector<float> ef(n), eb(n), store(static_cast<size_t>(n) * dim), norms(C, 0);
  for (auto& v : extra) v = static_cast<uint8_t>(byte(rng));
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(extra.data() + (i * stacked + planes) * nbytes, R.codes.data() + i * nbytes,
                nbytes);
  for (auto& v : ef) v = 0.1f + std::fabs(g(rng));
  for (auto& v : eb) v = g(rng);
  for (auto& v : store) v = g(rng);
  for (auto& v : levels) v = static_cast<uint8_t>(byte(rng) % 255);
  for (int c = 0; c < C; ++c)
    for (int d = 0; d < dim; ++d) norms[c] += R.centres[c * dim + d] * R.centres[c * dim + d];
  R.blocks.clear();  // blocked codes: the scan's copy, as bindings.cpp makes it
  std::vector<uint8_t> blocked((n + kScanBlock - 1) / kScanBlock * kScanBlock * nbytes, 0);
  block_codes(R.codes.data(), n, nbytes, blocked.data());
  SnapshotView v = R.view();
  v.lists.blocked = blocked.data();
  v.lists.extra = extra.data();
  v.lists.extra_planes = stacked;
  v.lists.extra_factors = ef.data();
  v.lists.extra_biases = eb.data();
  std::vector<float> x(dim);
  for (auto& e : x) e = g(rng);
  Queries q;
  q.n = 1;
  q.vectors = x.data();
  q.dim = dim;
  Plan p;
  p.k = p.candidates = k;
  p.reestimate = static_cast<int>(n);
  p.pool = static_cast<int>(n);
  p.scoring = Scoring::kAsymmetric;
  p.source = Source::kLists;
  p.nprobe = C;
  std::vector<float> S;
  std::vector<int64_t> I;
  run(v, p, q, RowFilter{}, nullptr, &S, &I);
  CentreQuery cq;
  cq.set(x.data(), dim);
  std::vector<int8_t> l(dim);
  std::vector<Scored<float>> all;
  auto plane_dot = [&](const uint8_t* b) {
    double s = 0;
    for (int j = 0; j < n_bits; ++j) s += x[j] * (((b[j / 8] >> (7 - j % 8)) & 1) ? 1 : -1);
    return s;
  };
  for (int64_t i = 0; i < n; ++i) {
    const int c = R.row_lists[i];
    quantize_levels(R.centres.data() + c * dim, dim, l.data());
    int64_t dot = 0;
    for (int d = 0; d < dim; ++d) dot += static_cast<int64_t>(l[d]) * cq.levels[d];
    double s = (1 << planes) * plane_dot(R.codes.data() + i * nbytes);
    for (int pl = 0; pl < planes; ++pl)
      s += (1 << pl) * plane_dot(extra.data() + (i * stacked + pl) * nbytes);
    const float cs = cq.step * R.steps[c] * static_cast<float>(dot);
    all.push_back({static_cast<float>(-(cs + eb[i] + ef[i] * s)), i});
  }
  auto want = best(all, k);
  for (int j = 0; j < k; ++j)
    CHECK(std::fabs(-want[j].key - S[j]) < 1e-3f * (1 + std::fabs(S[j])),
          "re-estimate isa=%s planes=%d j=%d: %f vs %f", isa_name(engine().isa), planes, j,
          -want[j].key, S[j]);

  VectorSegment seg{store.data(), nullptr, n};
  v.store.type = StoreType::kFloat32;
  v.store.dim = dim;
  v.store.row_bytes = sizeof(float) * dim;
  v.store.segments = &seg;
  v.store.n_segments = 1;
  v.lists.centre_norms = norms.data();
  p.rerank = true;
  p.candidates = static_cast<int>(n);
  p.reestimate = 0;
  std::vector<Scored<float>> exact;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int d = 0; d < dim; ++d) s += x[d] * store[i * dim + d];
    exact.push_back({static_cast<float>(-s), i});
  }
  auto top = best(exact, k);
  std::vector<uint8_t> none(n, kErrorLevelNone);
  for (int pass = 0; pass < 2; ++pass) {  // every row unbounded, then random levels
    v.lists.error_levels = pass ? levels.data() : none.data();
    p.bound = 0.5f;
    run(v, p, q, RowFilter{}, nullptr, &S, &I);
    for (int j = 0; j < k; ++j) {
      const int64_t r = I[j];
      CHECK(r >= 0 && r < n && std::fabs(S[j] + exact[r].key) < 1e-3f * (1 + std::fabs(S[j])),
            "bounded rerank score isa=%s pass=%d j=%d", isa_name(engine().isa), pass, j);
      CHECK(j == 0 || S[j] <= S[j - 1], "bounded rerank order");
      if (!pass) CHECK(r == top[j].row, "no bound: the exact top-k j=%d", j);
    }
  }
}

// IVF lists scanned from the blocked copy of the codes (fast scan, asymmetric.h) give the same
// keys as the row-major bit-plane path: identical scores and ids, unfiltered, with a filter
// bitmap and over a list of allowed rows; and every row's nibble-table distance equals the
// quantized distance computed bit by bit.
static void test_blocked_lists(std::mt19937_64& rng, int nbytes, int64_t n, int C, int k) {
  const RandomLists R(rng, nbytes, n, C);
  const int n_bits = R.n_bits, dim = R.dim;
  const std::vector<uint8_t>& codes = R.codes;
  const std::vector<float>& x = R.x;
  std::vector<uint8_t> blocked((n + kScanBlock - 1) / kScanBlock * kScanBlock * nbytes, 0);
  block_codes(codes.data(), n, nbytes, blocked.data());

  const AsymQuery a = make_asym_query(x.data(), n_bits);
  NibbleLuts luts;
  make_nibble_luts(a, &luts);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = ref_asym(a, codes.data() + i * nbytes, n_bits);
    const uint8_t* blk = blocked.data() + i / kScanBlock * kScanBlock * nbytes;
    CHECK(nibble_distance(luts, blk, static_cast<int>(i % kScanBlock)) == s,
          "nibble distance nbytes=%d row=%ld", nbytes, (long)i);
  }

  std::vector<uint64_t> bits((n + 63) / 64 + 1, 0);
  std::vector<int64_t> allowed;
  for (int64_t i = 0; i < n; ++i)
    if (rng() % 4 == 0) {
      bits[i >> 6] |= uint64_t(1) << (i & 63);
      allowed.push_back(i);
    }
  for (int mode = 0; mode < 6; ++mode) {  // unfiltered, bitmap, allowed rows; first stage only
    RowFilter f;
    if (mode % 3) {
      f.bits = bits.data();
      f.rows = allowed.data();
      f.n_rows = static_cast<int64_t>(allowed.size());
    }
    Plan p;
    p.k = p.candidates = k;
    p.pool = mode < 3 ? std::max(2 * k, k + 64) : k;
    p.quantized_only = mode >= 3;  // the scan's own keys, not the exact re-score's
    p.scoring = Scoring::kAsymmetric;
    p.source = mode % 3 == 2 ? Source::kAllowed : Source::kLists;
    p.nprobe = std::max(1, C / 2);
    p.threads = 2;
    Queries q;
    q.n = 1;
    q.vectors = x.data();
    q.dim = dim;
    std::vector<float> S[2];
    std::vector<int64_t> I[2];
    for (int b = 0; b < 2; ++b) {
      SnapshotView v = R.view();
      if (b) v.lists.blocked = blocked.data();
      run(v, p, q, f, nullptr, &S[b], &I[b]);
    }
    CHECK(S[0] == S[1] && I[0] == I[1], "blocked lists isa=%s nbytes=%d n=%ld mode=%d",
          isa_name(engine().isa), nbytes, (long)n, mode);
  }
}

int main() {
  std::mt19937_64 rng(11);
  test_select(rng);
  test_centre_levels(rng);
  for (int level = 0; level <= static_cast<int>(cpu_features().best); ++level) {
    set_isa(static_cast<Isa>(level));
    for (int nbytes : {8, 16, 24, 32, 48, 128})
      for (int64_t n : {0, 1, 7, 8, 9, 100, 1000})
        for (int k : {1, 10, 70}) test_knn(rng, nbytes, n, 3, k, n % 2 == 1, 2, false);
    test_knn(rng, 16, 70000, 1, 10, true, 2, false);    // one query split across threads
    test_knn(rng, 16, 70000, 1, 1000, true, 2, false);  // counting select, split
    test_knn(rng, 16, 20000, 5, 10, true, 2, true);     // filtered
    test_knn(rng, 16, 2000, 70, 100, false, 2, true);   // a batch sharing blocks, filtered
    for (int nbytes : {8, 16, 32, 128}) test_distances_and_range(rng, nbytes, 1000);
    for (int P : {1, 8, 16}) test_band(rng, P, 3000, 16, 3, 10);
    for (int nbytes : {8, 16, 32}) test_partitions(rng, nbytes, 2000, 17, 10);
    for (int nbytes : {8, 16, 24, 32, 48, 128}) test_asym(rng, nbytes, 1000, 50);
    for (int nbytes : {16, 32, 48}) test_lists(rng, nbytes, 600, 7, 20, 1);
    // centre tiles of 4 queries and their tails; one query's tiles of 4 blocks (C = 70)
    for (int nq : {2, 5, 9}) test_lists(rng, 32, 900, 70, 10, nq);
    for (int nbytes : {8, 16, 32, 128})
      for (int64_t n : {1, 15, 17, 600}) test_blocked_lists(rng, nbytes, n, n < 7 ? 1 : 7, 20);
    // many lists and larger pools (the reservoir's shrinks, the split of one query's lists)
    for (int k : {20, 300, 1000}) test_blocked_lists(rng, 32, 5000, 40, k);
    for (int nbytes : {16, 32})
      for (int planes = 1; planes <= kMaxExtraBits; ++planes)
        test_reestimate_and_bound(rng, nbytes, planes);
  }
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
