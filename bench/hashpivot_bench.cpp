// C++ microbenchmark: scan, top-k and pivot-filter throughput in codes per second per core.
// Usage: hashpivot_bench [n ...]   (default 10k 100k 1M 10M codes of 128 bits, one thread)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "dispatch.h"
#include "search.h"

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
  const int nbytes = 16, P = 8, nq = 16;
  std::mt19937_64 rng(7);
  std::printf("%-8s %10s %14s %14s %14s %14s %14s\n", "isa", "n", "dist Gc/s", "top10 Gc/s",
              "top1000 Gc/s", "batch16 Gc/s", "filter Grow/s");
  for (int64_t n : sizes) {
    std::vector<uint8_t> codes(n * nbytes), table(n * P), q(nq * nbytes);
    for (auto& b : codes) b = rng();
    for (auto& b : table) b = 52 + rng() % 24;
    for (auto& b : q) b = rng();
    std::vector<int32_t> out(n), D(nq * 1000), lo(P, 52), hi(P, 70);
    std::vector<int64_t> I(nq * 1000);
    Codes c{codes.data(), n, nbytes};
    Band band;
    band.table = table.data();
    band.P = P;
    band.lo = lo.data();
    band.hi = hi.data();
    const int reps = n >= 10000000 ? 3 : 7;
    for (int level = 0; level <= static_cast<int>(best_isa()); ++level) {
      set_isa(static_cast<Isa>(level));
      const double td = median_seconds([&] { kernels().distance_row(q.data(), codes.data(), 0, n, nbytes, out.data()); }, reps);
      const double t10 = median_seconds([&] { knn(q.data(), 1, c, 10, 1, D.data(), I.data()); }, reps);
      const double t1k = median_seconds([&] { knn(q.data(), 1, c, 1000, 1, D.data(), I.data()); }, reps);
      const double tb = median_seconds([&] { knn(q.data(), nq, c, 10, 1, D.data(), I.data()); }, reps);
      const double tf = median_seconds([&] { band_filter_rows(band, 0, n, 1); }, reps);
      std::printf("%-8s %10ld %14.3f %14.3f %14.3f %14.3f %14.3f\n", isa_name(static_cast<Isa>(level)),
                  (long)n, n / td * 1e-9, n / t10 * 1e-9, n / t1k * 1e-9, n * nq / tb * 1e-9,
                  n / tf * 1e-9);
    }
  }
  return 0;
}
