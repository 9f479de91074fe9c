// pybind11 bindings: validate arrays (never copy them silently), release the GIL, call C++.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "cpu.h"
#include "dispatch.h"
#include "index.h"
#include "partition.h"
#include "search.h"

namespace py = pybind11;
using namespace hashpivot;

namespace {

[[noreturn]] void type_error(const std::string& m) { throw py::type_error(m); }
[[noreturn]] void value_error(const std::string& m) { throw py::value_error(m); }

void require_dtype(const py::array& a, const py::dtype& dt, const char* name, const char* want) {
  if (!a.dtype().is(dt) && !a.dtype().equal(dt))
    type_error(std::string(name) + " must have dtype " + want + ", got " +
               std::string(py::str(a.dtype())));
}

void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    value_error(std::string(name) +
                " must be C-contiguous (hashpivot never copies silently); pass "
                "np.ascontiguousarray(...)");
}

// A (n, n_bits / 8) uint8 array of packed codes.
Codes as_codes(const py::array& a, const char* name) {
  require_dtype(a, py::dtype::of<uint8_t>(), name, "uint8");
  if (a.ndim() != 2)
    value_error(std::string(name) + " must be 2-D (n, n_bits // 8), got " +
                std::to_string(a.ndim()) + "-D");
  require_c_contiguous(a, name);
  const int64_t nbytes = a.shape(1);
  if (nbytes % 8 != 0 || nbytes * 8 < kMinBits || nbytes * 8 > kMaxBits)
    value_error(std::string(name) + " has " + std::to_string(nbytes * 8) +
                " bits per code; n_bits must be a multiple of 64 from 64 to 1024");
  return Codes{static_cast<const uint8_t*>(a.data()), a.shape(0), static_cast<int>(nbytes)};
}

void require_same_width(const Codes& q, const Codes& c) {
  if (q.nbytes != c.nbytes)
    value_error("queries have " + std::to_string(q.n_bits()) + " bits but codes have " +
                std::to_string(c.n_bits()));
}

int as_threads(int threads) {
  if (threads < 0) value_error("threads must be >= 1 (or None for all cores)");
  return threads;
}

// Pivot table (n, P), uint8 or uint16.
Band as_band(const py::array& table, int64_t n) {
  Band band;
  if (table.dtype().equal(py::dtype::of<uint8_t>()))
    band.wide = false;
  else if (table.dtype().equal(py::dtype::of<uint16_t>()))
    band.wide = true;
  else
    type_error("pivot table must have dtype uint8 or uint16, got " +
               std::string(py::str(table.dtype())));
  if (table.ndim() != 2) value_error("pivot table must be 2-D (n, n_pivots)");
  require_c_contiguous(table, "pivot table");
  if (table.shape(0) != n)
    value_error("pivot table has " + std::to_string(table.shape(0)) + " rows but there are " +
                std::to_string(n) + " codes");
  if (table.shape(1) < 1 || table.shape(1) > 16) value_error("n_pivots must be from 1 to 16");
  band.table = table.data();
  band.P = static_cast<int>(table.shape(1));
  return band;
}

py::array_t<int32_t> as_bounds(const py::array& a, int64_t rows, int P, const char* name) {
  require_dtype(a, py::dtype::of<int32_t>(), name, "int32");
  require_c_contiguous(a, name);
  if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != P)
    value_error(std::string(name) + " must have shape (" + std::to_string(rows) + ", " +
                std::to_string(P) + ")");
  return py::array_t<int32_t>(a);
}

py::tuple knn_py(const py::array& queries, const py::array& codes, int k, int threads,
                 const py::object& table, const py::object& lo, const py::object& hi,
                 const py::object& row_begin, const py::object& row_end) {
  const Codes q = as_codes(queries, "queries");
  const Codes c = as_codes(codes, "codes");
  require_same_width(q, c);
  if (k < 0) value_error("k must be >= 0, got " + std::to_string(k));
  as_threads(threads);
  Band band;
  py::array_t<int32_t> lo_a, hi_a;
  if (!table.is_none()) {
    band = as_band(table.cast<py::array>(), c.n);
    lo_a = as_bounds(lo.cast<py::array>(), q.n, band.P, "lo");
    hi_a = as_bounds(hi.cast<py::array>(), q.n, band.P, "hi");
    band.lo = lo_a.data();
    band.hi = hi_a.data();
  }
  Rows rows;
  py::array_t<int64_t> rb, re;
  if (!row_begin.is_none()) {
    rb = row_begin.cast<py::array_t<int64_t, py::array::c_style>>();
    re = row_end.cast<py::array_t<int64_t, py::array::c_style>>();
    if (rb.size() != q.n || re.size() != q.n) value_error("row windows need one entry per query");
    rows.begin = rb.data();
    rows.end = re.data();
  }
  py::array_t<int32_t> D({q.n, static_cast<int64_t>(k)});
  py::array_t<int64_t> I({q.n, static_cast<int64_t>(k)});
  int32_t* d = D.mutable_data();
  int64_t* i = I.mutable_data();
  {
    py::gil_scoped_release nogil;
    knn(q.data, q.n, c, k, threads, d, i, band, rows);
  }
  return py::make_tuple(D, I);
}

py::tuple range_py(const py::array& queries, const py::array& codes, int radius, int threads) {
  const Codes q = as_codes(queries, "queries");
  const Codes c = as_codes(codes, "codes");
  require_same_width(q, c);
  if (radius < 0) value_error("radius must be >= 0, got " + std::to_string(radius));
  as_threads(threads);
  std::vector<std::vector<Neighbor>> res;
  {
    py::gil_scoped_release nogil;
    res = range_search(q.data, q.n, c, radius, threads);
  }
  py::array_t<int64_t> lims(q.n + 1);
  int64_t total = 0;
  lims.mutable_data()[0] = 0;
  for (int64_t j = 0; j < q.n; ++j) lims.mutable_data()[j + 1] = (total += res[j].size());
  py::array_t<int32_t> D(total);
  py::array_t<int64_t> I(total);
  int64_t o = 0;
  for (auto& r : res)
    for (auto& nb : r) {
      D.mutable_data()[o] = nb.d;
      I.mutable_data()[o++] = nb.id;
    }
  return py::make_tuple(lims, D, I);
}

py::array_t<int32_t> distances_py(const py::array& queries, const py::array& codes, int threads) {
  const Codes q = as_codes(queries, "queries");
  const Codes c = as_codes(codes, "codes");
  require_same_width(q, c);
  as_threads(threads);
  py::array_t<int32_t> out({q.n, c.n});
  int32_t* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    distance_matrix(q.data, q.n, c, threads, o);
  }
  return out;
}

py::array_t<int64_t> pivot_filter_py(const py::array& table, const py::array& lo,
                                     const py::array& hi, int64_t begin, int64_t end,
                                     int threads) {
  Band band = as_band(table, table.ndim() == 2 ? table.shape(0) : 0);
  auto lo_a = as_bounds(lo, 1, band.P, "lo");
  auto hi_a = as_bounds(hi, 1, band.P, "hi");
  band.lo = lo_a.data();
  band.hi = hi_a.data();
  as_threads(threads);
  const int64_t n = table.shape(0);
  begin = std::max<int64_t>(0, begin);
  end = std::min<int64_t>(n, end < 0 ? n : end);
  std::vector<int64_t> rows;
  {
    py::gil_scoped_release nogil;
    rows = band_filter_rows(band, begin, end, threads);
  }
  py::array_t<int64_t> out(static_cast<int64_t>(rows.size()));
  std::copy(rows.begin(), rows.end(), out.mutable_data());
  return out;
}

// Allocates (D, I), runs `search(d, i, &scanned)` without the GIL: (D, I, scanned).
template <class F>
py::tuple run_topk(int64_t nq, int k, F&& search) {
  py::array_t<int32_t> D({nq, static_cast<int64_t>(k)});
  py::array_t<int64_t> I({nq, static_cast<int64_t>(k)});
  int32_t* d = D.mutable_data();
  int64_t* i = I.mutable_data();
  int64_t scanned = 0;
  {
    py::gil_scoped_release nogil;
    search(d, i, &scanned);
  }
  return py::make_tuple(D, I, scanned);
}

// Row offsets: n_cells + 1 non-decreasing entries from 0 to n.
const int64_t* as_offsets(const py::array& offsets, int64_t cells, int64_t n, const char* what) {
  require_dtype(offsets, py::dtype::of<int64_t>(), what, "int64");
  require_c_contiguous(offsets, what);
  if (offsets.ndim() != 1 || offsets.shape(0) != cells + 1)
    value_error(std::string(what) + " must have " + std::to_string(cells + 1) + " entries");
  const int64_t* off = static_cast<const int64_t*>(offsets.data());
  if (off[0] != 0 || off[cells] != n) value_error(std::string(what) + " do not cover the codes");
  for (int64_t j = 0; j < cells; ++j)
    if (off[j + 1] < off[j]) value_error(std::string(what) + " must not decrease");
  return off;
}

py::tuple banded_knn_py(const py::array& queries, const py::array& codes, const py::array& table,
                        const py::array& lo, const py::array& hi, const py::array& offsets,
                        int levels, int k, int threads) {
  const Codes q = as_codes(queries, "queries");
  const Codes c = as_codes(codes, "codes");
  require_same_width(q, c);
  if (k < 0) value_error("k must be >= 0");
  as_threads(threads);
  Band band = as_band(table, c.n);
  auto lo_a = as_bounds(lo, q.n, band.P, "lo");
  auto hi_a = as_bounds(hi, q.n, band.P, "hi");
  band.lo = lo_a.data();
  band.hi = hi_a.data();
  if (levels < 1 || levels > 2 || levels > band.P) value_error("levels must be 1 or 2 (<= n_pivots)");
  int64_t cells = 1;
  for (int l = 0; l < levels; ++l) cells *= c.n_bits() + 1;
  PivotLayout layout{as_offsets(offsets, cells, c.n, "offsets"), levels, c.n_bits()};
  return run_topk(q.n, k, [&](int32_t* d, int64_t* i, int64_t* scanned) {
    banded_knn(q.data, q.n, c, band, layout, k, threads, d, i, scanned);
  });
}

py::tuple rerank_py(const py::array& queries, const py::array& cand, const py::array& store,
                    const py::object& scales, int k, int threads) {
  require_dtype(queries, py::dtype::of<float>(), "queries", "float32");
  require_c_contiguous(queries, "queries");
  require_dtype(cand, py::dtype::of<int64_t>(), "candidates", "int64");
  require_c_contiguous(cand, "candidates");
  require_c_contiguous(store, "store");
  if (queries.ndim() != 2 || cand.ndim() != 2 || store.ndim() != 2)
    value_error("queries, candidates and store must be 2-D");
  if (cand.shape(0) != queries.shape(0)) value_error("one candidate row per query");
  if (store.shape(1) != queries.shape(1)) value_error("queries and store differ in dimension");
  if (k < 0) value_error("k must be >= 0");
  Store st{store.data(), StoreType::kFloat32, static_cast<int>(store.shape(1)), nullptr};
  py::array_t<float> sc;
  if (store.dtype().equal(py::dtype::of<float>())) {
    st.type = StoreType::kFloat32;
  } else if (store.dtype().equal(py::dtype("float16"))) {
    st.type = StoreType::kFloat16;
  } else if (store.dtype().equal(py::dtype::of<int8_t>())) {
    st.type = StoreType::kInt8;
    sc = scales.cast<py::array_t<float, py::array::c_style>>();
    if (sc.ndim() != 1 || sc.shape(0) != store.shape(0)) value_error("int8 store needs one scale a row");
    st.scales = sc.data();
  } else {
    type_error("store must be float32, float16 or int8");
  }
  const int64_t nq = queries.shape(0), L = cand.shape(1), n = store.shape(0);
  const int64_t* cp = static_cast<const int64_t*>(cand.data());
  for (int64_t j = 0; j < nq * L; ++j)
    if (cp[j] >= n || cp[j] < -1) value_error("candidate row out of range");
  py::array_t<float> S({nq, static_cast<int64_t>(k)});
  py::array_t<int64_t> R({nq, static_cast<int64_t>(k)});
  float* s = S.mutable_data();
  int64_t* r = R.mutable_data();
  const float* qp = static_cast<const float*>(queries.data());
  {
    py::gil_scoped_release nogil;
    rerank(qp, nq, cp, static_cast<int>(L), st, k, threads, s, r);
  }
  return py::make_tuple(S, R);
}

// z: (nq, n_bits) float32 query projections, matching the codes' width.
const float* as_projections(const py::array& z, const Codes& c) {
  require_dtype(z, py::dtype::of<float>(), "projections", "float32");
  require_c_contiguous(z, "projections");
  if (z.ndim() != 2 || z.shape(1) != c.n_bits())
    value_error("projections must have shape (nq, " + std::to_string(c.n_bits()) + ")");
  return static_cast<const float*>(z.data());
}

py::tuple asym_knn_py(const py::array& z, const py::array& codes, int k, int threads) {
  const Codes c = as_codes(codes, "codes");
  const float* zp = as_projections(z, c);
  if (k < 0) value_error("k must be >= 0");
  as_threads(threads);
  const int64_t nq = z.shape(0);
  py::array_t<int32_t> D({nq, static_cast<int64_t>(k)});
  py::array_t<int64_t> I({nq, static_cast<int64_t>(k)});
  int32_t* d = D.mutable_data();
  int64_t* i = I.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::vector<AsymQuery> qs(nq);
    for (int64_t q = 0; q < nq; ++q) qs[q] = make_asym_query(zp + q * c.n_bits(), c.n_bits());
    asym_knn(qs.data(), nq, c, k, threads, d, i);
  }
  return py::make_tuple(D, I);
}

py::tuple asym_rescore_py(const py::array& z, const py::array& codes, const py::array& cand,
                          int k, int threads) {
  const Codes c = as_codes(codes, "codes");
  const float* zp = as_projections(z, c);
  require_dtype(cand, py::dtype::of<int64_t>(), "candidates", "int64");
  require_c_contiguous(cand, "candidates");
  if (cand.ndim() != 2 || cand.shape(0) != z.shape(0)) value_error("one candidate row per query");
  if (k < 0) value_error("k must be >= 0");
  as_threads(threads);
  const int64_t nq = z.shape(0), M = cand.shape(1);
  const int64_t* cp = static_cast<const int64_t*>(cand.data());
  for (int64_t j = 0; j < nq * M; ++j)
    if (cp[j] >= c.n || cp[j] < -1) value_error("candidate row out of range");
  py::array_t<float> S({nq, static_cast<int64_t>(k)});
  py::array_t<int64_t> R({nq, static_cast<int64_t>(k)});
  float* s = S.mutable_data();
  int64_t* r = R.mutable_data();
  {
    py::gil_scoped_release nogil;
    asym_rescore(zp, nq, c.n_bits(), c.data, cp, static_cast<int>(M), k, threads, s, r);
  }
  return py::make_tuple(S, R);
}

template <class T>
py::tuple partition_knn_typed(const Codes& q, const Codes& c, const Partitions<T>& P,
                              const py::object& table, const py::object& lo,
                              const py::object& hi, int k, int nprobe, int threads) {
  PartitionBand<T> pb;
  py::array_t<int32_t> lo_a, hi_a;
  if (!table.is_none()) {
    const py::array tab = table.cast<py::array>();
    const Band band = as_band(tab, c.n);
    if (band.wide != std::is_same_v<T, uint16_t>) type_error("pivot table and cdist differ in dtype");
    if (lo.is_none() || hi.is_none()) value_error("a pivot table needs lo and hi");
    lo_a = as_bounds(lo.cast<py::array>(), q.n, band.P, "lo");
    hi_a = as_bounds(hi.cast<py::array>(), q.n, band.P, "hi");
    pb = {static_cast<const T*>(band.table), band.P, lo_a.data(), hi_a.data()};
  }
  return run_topk(q.n, k, [&](int32_t* d, int64_t* i, int64_t* scanned) {
    partition_knn(q.data, q.n, c, P, pb, k, nprobe, threads, d, i, scanned);
  });
}

py::tuple partition_knn_py(const py::array& queries, const py::array& codes,
                           const py::array& centres, const py::array& offsets,
                           const py::array& radius, const py::array& cdist, int k, int nprobe,
                           int threads, const py::object& table, const py::object& lo,
                           const py::object& hi) {
  const Codes q = as_codes(queries, "queries");
  const Codes c = as_codes(codes, "codes");
  const Codes cen = as_codes(centres, "centres");
  require_same_width(q, c);
  require_same_width(cen, c);
  if (k < 0 || nprobe < 0) value_error("k and nprobe must be >= 0");
  as_threads(threads);
  require_dtype(radius, py::dtype::of<int32_t>(), "radius", "int32");
  require_c_contiguous(radius, "radius");
  if (radius.ndim() != 1 || radius.shape(0) != cen.n) value_error("one radius per partition");
  require_c_contiguous(cdist, "cdist");
  if (cdist.ndim() != 1 || cdist.shape(0) != c.n) value_error("one centre distance per row");
  const int64_t* offs = as_offsets(offsets, cen.n, c.n, "partition offsets");
  const int32_t* rad = static_cast<const int32_t*>(radius.data());
  if (cdist.dtype().equal(py::dtype::of<uint8_t>()))
    return partition_knn_typed(
        q, c, Partitions<uint8_t>{cen.data, cen.n, offs, rad, static_cast<const uint8_t*>(cdist.data())},
        table, lo, hi, k, nprobe, threads);
  if (cdist.dtype().equal(py::dtype::of<uint16_t>()))
    return partition_knn_typed(
        q, c, Partitions<uint16_t>{cen.data, cen.n, offs, rad, static_cast<const uint16_t*>(cdist.data())},
        table, lo, hi, k, nprobe, threads);
  type_error("cdist must have dtype uint8 or uint16");
}

py::tuple asym_partition_knn_py(const py::array& z, const py::array& codes,
                                const py::array& centres, const py::array& offsets, int nprobe,
                                int M, int threads) {
  const Codes c = as_codes(codes, "codes");
  const Codes cen = as_codes(centres, "centres");
  require_same_width(cen, c);
  const float* zp = as_projections(z, c);
  if (M < 0 || nprobe < 1) value_error("M must be >= 0 and nprobe >= 1");
  as_threads(threads);
  const int64_t* offs = as_offsets(offsets, cen.n, c.n, "partition offsets");
  const int64_t nq = z.shape(0);
  return run_topk(nq, M, [&](int32_t* d, int64_t* i, int64_t* scanned) {
    std::vector<AsymQuery> qs(nq);
    for (int64_t q = 0; q < nq; ++q) qs[q] = make_asym_query(zp + q * c.n_bits(), c.n_bits());
    asym_partition_knn(qs.data(), nq, c, cen.data, cen.n, offs, nprobe, M, threads, d, i, scanned);
  });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "hashpivot's compiled core: Hamming kernels, top-k, pivot band filter";
  m.def("cpu_features", [] {
    py::dict d;
    __builtin_cpu_init();
    d["isa"] = isa_name(kernels().isa);
    d["best_isa"] = isa_name(best_isa());
    d["popcnt"] = static_cast<bool>(__builtin_cpu_supports("popcnt"));
    d["avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
    d["avx512_vpopcntdq"] = static_cast<bool>(__builtin_cpu_supports("avx512vpopcntdq"));
    d["threads"] = ThreadPool::hardware_threads();
    return d;
  });
  m.def("set_isa", [](const std::string& name) {
    Isa isa;
    if (!parse_isa(name, &isa))
      value_error("unknown isa '" + name + "'; use portable, popcnt, avx2 or avx512");
    set_isa(isa);
  });
  m.def("knn", &knn_py, py::arg("queries"), py::arg("codes"), py::arg("k"),
        py::arg("threads") = 0, py::arg("table") = py::none(), py::arg("lo") = py::none(),
        py::arg("hi") = py::none(), py::arg("row_begin") = py::none(),
        py::arg("row_end") = py::none());
  m.def("range_search", &range_py, py::arg("queries"), py::arg("codes"), py::arg("radius"),
        py::arg("threads") = 0);
  m.def("distances", &distances_py, py::arg("queries"), py::arg("codes"), py::arg("threads") = 0);
  m.def("banded_knn", &banded_knn_py, py::arg("queries"), py::arg("codes"), py::arg("table"),
        py::arg("lo"), py::arg("hi"), py::arg("offsets"), py::arg("levels"), py::arg("k"),
        py::arg("threads") = 0);
  m.def("rerank", &rerank_py, py::arg("queries"), py::arg("candidates"), py::arg("store"),
        py::arg("scales") = py::none(), py::arg("k"), py::arg("threads") = 0);
  m.def("asym_knn", &asym_knn_py, py::arg("projections"), py::arg("codes"), py::arg("k"),
        py::arg("threads") = 0);
  m.def("asym_rescore", &asym_rescore_py, py::arg("projections"), py::arg("codes"),
        py::arg("candidates"), py::arg("k"), py::arg("threads") = 0);
  m.def("partition_knn", &partition_knn_py, py::arg("queries"), py::arg("codes"),
        py::arg("centres"), py::arg("offsets"), py::arg("radius"), py::arg("cdist"), py::arg("k"),
        py::arg("nprobe") = 0, py::arg("threads") = 0, py::arg("table") = py::none(),
        py::arg("lo") = py::none(), py::arg("hi") = py::none());
  m.def("asym_partition_knn", &asym_partition_knn_py, py::arg("projections"), py::arg("codes"),
        py::arg("centres"), py::arg("offsets"), py::arg("nprobe"), py::arg("M"),
        py::arg("threads") = 0);
  m.def("pivot_filter", &pivot_filter_py, py::arg("table"), py::arg("lo"), py::arg("hi"),
        py::arg("begin") = 0, py::arg("end") = -1, py::arg("threads") = 0);
}
