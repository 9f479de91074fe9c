// The search driver: one call runs every query of a batch through stages.h on the thread pool.
// Chunks of queries run in parallel (queries of a chunk share each L2-sized block of codes when
// the source is the whole table or pivot windows); with fewer queries than threads, each query's
// rows are split between threads and the parts merged, which gives the same ids: every collector
// keeps the smallest (key, row) of what it saw.
#pragma once
#include "stages.h"

namespace hashpivot {
namespace {

constexpr int64_t kQueryChunk = 64;  // queries that share each block of codes

using PartFn = void (*)(const Ctx&, const QueryState&, int64_t, int64_t, FirstStage&);
using BatchFn = void (*)(const Ctx&, QueryState* const*, int64_t);
using SegmentsFn = void (*)(const Ctx&, QueryState&);

// The first stage's code for this call, chosen once: code width x metric x collector (the
// filter and the pivot band are checked at run time: metrics.h).
struct FirstStageFns {
  PartFn part = nullptr;
  BatchFn batch = nullptr;  // null: no block sharing
  SegmentsFn segments = nullptr;
  bool splittable = true;  // a query's rows may be split between threads
};

template <int W>
using Width = std::integral_constant<int, W>;

template <class F>
void with_width(int nbytes, F&& f) {
  switch (nbytes) {  // fast paths for 64, 128, 256 and 384 bits; any other width at run time
    case 8:
      f(Width<1>{});
      break;
    case 16:
      f(Width<2>{});
      break;
    case 32:
      f(Width<4>{});
      break;
    case 48:
      f(Width<6>{});
      break;
    default:
      f(Width<0>{});
  }
}

// Batch: whether the metric shares blocks of codes between queries (whole-table sources only;
// ivf scans lists, never the whole table).
template <class A, class M, bool Batch>
void pick_collector(const Ctx& c, FirstStageFns& fns) {
  auto take = [&](auto impl) {
    using I = decltype(impl);
    fns.part = &I::part;
    if constexpr (Batch) fns.batch = &I::batch;
  };
  if constexpr (std::is_same_v<typename M::Key, float>) {
    if (c.pool_k <= kHeapMaxK)
      take(FirstStageImpl<A, M, HeapTopK<float>>{});
    else
      take(FirstStageImpl<A, M, ReservoirTopK<float>>{});
  } else if (c.pool_k <= kHeapMaxK) {
    take(FirstStageImpl<A, M, HeapTopK<int32_t>>{});
  } else {
    take(FirstStageImpl<A, M, CountingTopK>{});
  }
}

template <class A, int W>
void pick_metric(const Ctx& c, FirstStageFns& fns) {
  if (c.p.scoring == Scoring::kHamming || c.p.hamming_first) {
    using M = HammingOf<A, W>;
    if (c.p.source == Source::kPartitions && c.p.nprobe == 0) {  // exact: rows out of order
      fns.part = &exact_partitions<A, M>;
      fns.splittable = false;
    } else {
      pick_collector<A, M, true>(c, fns);
    }
  } else if (c.s.lists.C) {  // ivf rows: list score + factor * code score
    pick_collector<A, ListMetric<A, kAsymWidth<A, W>>, false>(c, fns);
  } else {
    pick_collector<A, AsymMetric<A, kAsymWidth<A, W>>, true>(c, fns);
  }
}

// Rows one query's first stage reads, for the threading decision.
inline int64_t rows_per_query(const Ctx& c) {
  const SnapshotView& s = c.s;
  switch (c.p.source) {
    case Source::kPartitions:
      return c.p.nprobe ? s.codes.n / std::max<int64_t>(s.parts.C, 1) * c.p.nprobe + s.parts.C
                        : s.codes.n / 2;
    case Source::kLists:
      return std::max<int64_t>(s.codes.n / std::max<int64_t>(s.lists.C, 1) * c.p.nprobe,
                               c.p.probe_rows) +
             s.lists.C * s.lists.dim / 16;
    case Source::kAllowed:
      return c.f.n_rows;
    default:
      return s.codes.n;
  }
}

template <class A>
void search(const SnapshotView& s, const Plan& p, const Queries& q, const RowFilter& f,
            Results& r) {
  const int64_t nq = q.n;
  if (nq <= 0 || p.k <= 0) return;
  const int64_t rows = p.source == Source::kAllowed ? f.n_rows : s.codes.n;
  Ctx c{s,
        p,
        q,
        f,
        s.codes.nbytes,
        s.codes.n_bits(),
        static_cast<int>(std::min<int64_t>(p.pool, std::max<int64_t>(rows, 1)))};
  FirstStageFns fns;
  with_width(c.nb, [&](auto w) {
    constexpr int W = decltype(w)::value;
    fns.segments = &list_segments<A, W>;
    pick_metric<A, W>(c, fns);
  });
  const int dim = std::max(s.store.dim, 1);
  const int64_t later = p.rerank ? int64_t(p.candidates) * dim / 16 : p.candidates;
  ThreadPool& pool = ThreadPool::get();
  const int threads = threads_for(p.threads, nq * (rows_per_query(c) + later));

  auto first_stage = [&](QueryState& st) {
    if (p.exact_allowed) {  // few allowed rows: they are the candidates
      st.pool.resize(f.n_rows);
      for (int64_t j = 0; j < f.n_rows; ++j) st.pool[j] = {0.0f, f.rows[j]};
      st.scanned = f.n_rows;
      return;
    }
    thread_local FirstStage out;
    fns.part(c, st, 0, st.seg_rows, out);
    std::swap(st.pool, out.pool);
    st.scanned = out.scanned;
  };

  if (nq >= threads || !fns.splittable) {
    const bool batched =
        fns.batch && !p.exact_allowed && (p.source == Source::kAll || p.source == Source::kBand);
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(kQueryChunk, nq / (4 * threads)));
    const int64_t n_chunks = (nq + chunk - 1) / chunk;
    std::vector<int64_t> scanned(n_chunks, 0), reranked(n_chunks, 0);
    pool.parallel_for(n_chunks, threads, [&](int64_t t) {
      const int64_t q0 = t * chunk, q1 = std::min(nq, q0 + chunk);
      thread_local std::vector<QueryState> sts;
      if (static_cast<int64_t>(sts.size()) < q1 - q0) sts.resize(q1 - q0);
      prepare<A>(c, q0, q1, sts.data());
      for (int64_t qi = q0; qi < q1; ++qi) fns.segments(c, sts[qi - q0]);
      if (batched && q1 - q0 > 1) {
        std::vector<QueryState*> ptrs(q1 - q0);
        for (int64_t j = 0; j < q1 - q0; ++j) ptrs[j] = &sts[j];
        fns.batch(c, ptrs.data(), q1 - q0);
      } else {
        for (int64_t j = 0; j < q1 - q0; ++j) first_stage(sts[j]);
      }
      for (int64_t qi = q0; qi < q1; ++qi) {
        finish<A>(c, sts[qi - q0], qi, r);
        scanned[t] += sts[qi - q0].scanned;
        reranked[t] += sts[qi - q0].reranked;
      }
    });
    for (int64_t v : scanned) r.scanned += v;
    for (int64_t v : reranked) r.reranked += v;
    return;
  }
  // fewer queries than threads: each query's rows split into parts, merged
  const int parts = threads;
  std::vector<QueryState> sts(nq);
  prepare<A>(c, 0, nq, sts.data());
  for (int64_t qi = 0; qi < nq; ++qi) fns.segments(c, sts[qi]);
  std::vector<FirstStage> partial(nq * parts);
  pool.parallel_for(nq * parts, threads, [&](int64_t t) {
    QueryState& st = sts[t / parts];
    const int64_t part = t % parts;
    if (p.exact_allowed) return;
    fns.part(c, st, st.seg_rows * part / parts, st.seg_rows * (part + 1) / parts, partial[t]);
  });
  for (int64_t qi = 0; qi < nq; ++qi) {
    QueryState& st = sts[qi];
    if (p.exact_allowed) {
      first_stage(st);
    } else {
      std::vector<std::vector<Scored<float>>> mine(parts);
      st.scanned = 0;
      for (int part = 0; part < parts; ++part) {
        mine[part] = std::move(partial[qi * parts + part].pool);
        st.scanned += partial[qi * parts + part].scanned;
      }
      st.pool = merge_parts(mine, static_cast<size_t>(c.pool_k));
    }
    finish<A>(c, st, qi, r);
    r.scanned += st.scanned;
    r.reranked += st.reranked;
  }
}

}  // namespace
}  // namespace hashpivot
