// C++ microbenchmark of the engine: codes per second per core for the Hamming scan (distance
// rows, top-10, top-1000, a batch of 16 sharing blocks), the quantized asymmetric scan and the
// pivot band, on every instruction set this CPU has. One thread, median of several runs.
// Usage: hashpivot_bench [n ...]   (default 10k 100k 1M 10M codes of 128 bits)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "dispatch.h"

using namespace hashpivot;
using Clock = std::chrono::steady_clock;

template <class F>
static double median_seconds(F&& f, int reps) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  std::vector<int64_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {10000, 100000, 1000000, 10000000};
  const int nbytes = 16, n_bits = 128, P = 8, nq = 16;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g;
  std::printf("%-8s %10s %11s %11s %11s %11s %11s %11s\n", "isa", "n", "dist Gc/s", "top10",
              "top1000", "batch16", "asym top10", "band Gr/s");
  for (int64_t n : sizes) {
    std::vector<uint8_t> codes(n * nbytes), table(n * P), q(nq * nbytes);
    for (auto& b : codes) b = rng();
    for (auto& b : table) b = 52 + rng() % 24;
    for (auto& b : q) b = rng();
    std::vector<float> z(nq * n_bits);
    for (auto& v : z) v = g(rng);
    std::vector<int32_t> out(n), D(nq * 1000), lo(P, 52), hi(P, 70);
    std::vector<int64_t> I(nq * 1000);
    SnapshotView v;
    v.codes = {codes.data(), n, nbytes};
    auto search = [&](int64_t queries, int k, Scoring scoring) {
      Plan p;
      p.k = p.candidates = k;
      p.pool = scoring == Scoring::kHamming ? k : std::max(2 * k, k + 64);
      p.scoring = scoring;
      p.threads = 1;
      Queries qs;
      qs.n = queries;
      if (scoring == Scoring::kHamming)
        qs.codes = q.data();
      else
        qs.projections = z.data();
      std::vector<float> S(queries * k);
      Results r{S.data(), scoring == Scoring::kHamming ? D.data() : nullptr, I.data(), 0};
      if (scoring == Scoring::kAsymmetric) r.distances = nullptr;
      engine().search(v, p, qs, RowFilter{}, r);
    };
    const PivotTable piv{nullptr, table.data(), false, P};
    const int reps = n >= 10000000 ? 3 : 7;
    for (int level = 0; level <= static_cast<int>(cpu_features().best); ++level) {
      set_isa(static_cast<Isa>(level));
      const double td =
          median_seconds([&] { engine().distances(q.data(), 1, v.codes, 1, out.data()); }, reps);
      const double t10 = median_seconds([&] { search(1, 10, Scoring::kHamming); }, reps);
      const double t1k = median_seconds([&] { search(1, 1000, Scoring::kHamming); }, reps);
      const double tb = median_seconds([&] { search(nq, 10, Scoring::kHamming); }, reps);
      const double ta = median_seconds([&] { search(1, 10, Scoring::kAsymmetric); }, reps);
      const double tf = median_seconds(
          [&] { engine().band_filter_rows(piv, n, lo.data(), hi.data(), 0, n, 1); }, reps);
      std::printf("%-8s %10ld %11.3f %11.3f %11.3f %11.3f %11.3f %11.3f\n",
                  isa_name(static_cast<Isa>(level)), (long)n, n / td * 1e-9, n / t10 * 1e-9,
                  n / t1k * 1e-9, n * nq / tb * 1e-9, n / ta * 1e-9, n / tf * 1e-9);
    }
  }
  return 0;
}
