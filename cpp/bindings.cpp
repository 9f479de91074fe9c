// pybind11 bindings. A Snapshot validates its arrays once, when it is made, and keeps them
// alive; Snapshot.search runs a whole search (every stage, every query) in one call without the
// GIL. The module functions are the kernels behind hashpivot.kernels. Arrays are never copied.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <string>
#include <vector>

#include "asymmetric.h"
#include "centres.h"
#include "codes.h"
#include "cpu.h"
#include "dispatch.h"
#include "snapshot.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace hashpivot;

namespace {

[[noreturn]] void fail(const std::string& m) { throw InputError(m); }
[[noreturn]] void fail_dtype(const std::string& m) { throw DtypeError(m); }

bool has_dtype(const py::array& a, const py::dtype& dt) { return a.dtype().equal(dt); }

void require_dtype(const py::array& a, const py::dtype& dt, const std::string& name,
                   const char* want) {
  if (!has_dtype(a, dt))
    fail_dtype(name + " must have dtype " + want + ", got " + std::string(py::str(a.dtype())));
}

void require_shape(const py::array& a, const std::string& name, std::vector<int64_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) {
    std::string want = "(", got = "(";
    for (size_t i = 0; i < shape.size(); ++i)
      want += (i ? ", " : "") + (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
    for (py::ssize_t i = 0; i < a.ndim(); ++i) got += (i ? ", " : "") + std::to_string(a.shape(i));
    fail(name + " must have shape " + want + "), got " + got + ")");
  }
  if (!(a.flags() & py::array::c_style))
    fail(name +
         " must be C-contiguous (hashpivot never copies silently); pass "
         "np.ascontiguousarray(...)");
}

// A (n, n_bits / 8) uint8 array of packed codes.
CodeView as_codes(const py::array& a, const std::string& name) {
  require_dtype(a, py::dtype::of<uint8_t>(), name, "uint8");
  require_shape(a, name, {-1, -1});
  const int64_t nbytes = a.shape(1);
  if (nbytes % 8 != 0 || nbytes * 8 < kMinBits || nbytes * 8 > kMaxBits)
    fail(name + " has " + std::to_string(nbytes * 8) + " bits per code; n_bits must be a " +
         "multiple of 64 from " + std::to_string(kMinBits) + " to " + std::to_string(kMaxBits));
  return CodeView{static_cast<const uint8_t*>(a.data()), a.shape(0), static_cast<int>(nbytes)};
}

void require_same_width(const CodeView& q, const CodeView& c) {
  if (q.nbytes != c.nbytes)
    fail("queries have " + std::to_string(q.n_bits()) + " bits but codes have " +
         std::to_string(c.n_bits()));
}

int as_threads(int threads) {
  if (threads < 0) fail("threads must be >= 1 (or 0 for all cores)");
  return threads;
}

const char* table_dtype_name(int n_bits) { return wide_table(n_bits) ? "uint16" : "uint8"; }

py::dtype table_dtype(int n_bits) {
  return wide_table(n_bits) ? py::dtype::of<uint16_t>() : py::dtype::of<uint8_t>();
}

// n_cells + 1 non-decreasing offsets from 0 to n.
const int64_t* as_offsets(const py::array& a, int64_t cells, int64_t n, const std::string& name) {
  require_dtype(a, py::dtype::of<int64_t>(), name, "int64");
  require_shape(a, name, {cells + 1});
  const int64_t* off = static_cast<const int64_t*>(a.data());
  if (off[0] != 0 || off[cells] != n) fail(name + " do not cover the rows");
  for (int64_t j = 0; j < cells; ++j)
    if (off[j + 1] < off[j]) fail(name + " must not decrease");
  return off;
}

template <class T>
void check_partitions(const HammingPartitions& P, const T* cd, int n_bits) {
  for (int64_t g = 0; g < P.C; ++g) {
    if (P.radius[g] < 0 || P.radius[g] > n_bits) fail("partition radii must be in [0, n_bits]");
    for (int64_t r = P.offsets[g]; r < P.offsets[g + 1]; ++r) {
      if (cd[r] > P.radius[g]) fail("a row lies outside its partition's radius");
      if (r > P.offsets[g] && cd[r] < cd[r - 1]) fail("rows must be ordered by centre distance");
    }
  }
}

bool is_set(const py::object& o) { return !o.is_none(); }

// A search's float output, or Hamming distances.
struct Output {
  py::array_t<float> scores;
  py::array_t<int32_t> distances;
  py::array_t<int64_t> ids;
};

class Snapshot {
 public:
  Snapshot(const py::array& codes, const py::object& ids, const py::object& mean,
           const py::object& projection, const py::object& pivots, const py::object& table,
           const py::object& cells, int levels, const py::object& centres,
           const py::object& part_offsets, const py::object& radius, const py::object& cdist,
           const py::object& list_centres, const py::object& list_offsets,
           const py::object& factors, const py::object& lists, const py::object& vectors,
           const py::object& scales, const py::object& slots, const py::object& biases,
           const py::object& list_radii, const py::object& error_levels, const py::object& extra,
           const py::object& extra_factors, const py::object& extra_biases) {
    v_.codes = as_codes(codes, "codes");
    keep(codes);
    const int64_t n = v_.codes.n, nb = v_.codes.nbytes;
    const int n_bits = v_.codes.n_bits();
    if (is_set(ids)) {
      const py::array a = keep(ids);
      require_dtype(a, py::dtype::of<int64_t>(), "ids", "int64");
      require_shape(a, "ids", {n});
      v_.ids = static_cast<const int64_t*>(a.data());
      // a search reads its own int32 copy where every id fits (half the bytes; an index loaded
      // with mmap leaves the int64 ids on disk)
      ids32_.resize(n);  // one pass: copied while checked, dropped at the first that does not fit
      for (int64_t r = 0; r < n; ++r) {
        if (v_.ids[r] < 0 || v_.ids[r] > std::numeric_limits<int32_t>::max()) {
          ids32_.clear();
          break;
        }
        ids32_[r] = static_cast<int32_t>(v_.ids[r]);
      }
      ids32_.shrink_to_fit();
      if (!ids32_.empty()) v_.ids32 = ids32_.data();
    }
    int dim = 0;
    if (is_set(projection)) {
      const py::array p = keep(projection);
      require_dtype(p, py::dtype::of<float>(), "projection", "float32");
      require_shape(p, "projection", {-1, n_bits});
      dim = static_cast<int>(std::min<int64_t>(p.shape(0), kMaxDim + 1));
      if (dim < 1 || dim > kMaxDim)
        fail("the embedding dimension must be from 1 to " + std::to_string(kMaxDim));
      v_.transform = {nullptr, static_cast<const float*>(p.data()), dim, n_bits};
      if (is_set(mean)) {
        const py::array m = keep(mean);
        require_dtype(m, py::dtype::of<float>(), "mean", "float32");
        require_shape(m, "mean", {dim});
        v_.transform.mean = static_cast<const float*>(m.data());
      }
    }
    if (is_set(pivots)) {
      const py::array pv = keep(pivots), tb = keep(table);
      require_dtype(pv, py::dtype::of<uint8_t>(), "pivots", "uint8");
      require_shape(pv, "pivots", {-1, nb});
      const int P = static_cast<int>(std::min<int64_t>(pv.shape(0), kMaxPivots + 1));
      if (P < 1 || P > kMaxPivots) fail("n_pivots must be from 1 to " + std::to_string(kMaxPivots));
      require_dtype(tb, table_dtype(n_bits), "pivot table", table_dtype_name(n_bits));
      require_shape(tb, "pivot table", {n, P});
      v_.pivots = {static_cast<const uint8_t*>(pv.data()), tb.data(), wide_table(n_bits), P};
      if (levels) {
        if (levels < 1 || levels > kMaxSortedLevels || levels > P)
          fail("levels must be from 1 to " + std::to_string(kMaxSortedLevels) +
               " (at most n_pivots)");
        int64_t n_cells = 1;
        for (int l = 0; l < levels; ++l) n_cells *= n_bits + 1;
        v_.cells = {as_offsets(keep(cells), n_cells, n, "cell offsets"), levels};
      }
    } else if (levels) {
      fail("sorted cells need pivots");
    }
    if (is_set(centres)) {
      const py::array cc = keep(centres), rad = keep(radius), cd = keep(cdist);
      require_dtype(cc, py::dtype::of<uint8_t>(), "centres", "uint8");
      require_shape(cc, "centres", {-1, nb});
      HammingPartitions& P = v_.parts;
      P.centres = static_cast<const uint8_t*>(cc.data());
      P.C = cc.shape(0);
      if (P.C < 1) fail("a partitioned snapshot needs at least one centre");
      P.offsets = as_offsets(keep(part_offsets), P.C, n, "partition offsets");
      require_dtype(rad, py::dtype::of<int32_t>(), "radius", "int32");
      require_shape(rad, "radius", {P.C});
      P.radius = static_cast<const int32_t*>(rad.data());
      require_dtype(cd, table_dtype(n_bits), "cdist", table_dtype_name(n_bits));
      require_shape(cd, "cdist", {n});
      P.cdist = cd.data();
      P.wide = wide_table(n_bits);
      if (P.wide)
        check_partitions(P, static_cast<const uint16_t*>(P.cdist), n_bits);
      else
        check_partitions(P, static_cast<const uint8_t*>(P.cdist), n_bits);
    }
    if (is_set(list_centres)) {
      const py::array lc = keep(list_centres), f = keep(factors);
      require_dtype(lc, py::dtype::of<float>(), "list centres", "float32");
      require_shape(lc, "list centres", {-1, dim ? dim : -1});
      FloatLists& L = v_.lists;
      L.centres = static_cast<const float*>(lc.data());
      L.C = lc.shape(0);
      L.dim = static_cast<int>(lc.shape(1));
      if (L.C < 1) fail("an ivf snapshot needs at least one list");
      if (!dim) fail("an ivf snapshot needs the residual projection");
      L.offsets = as_offsets(keep(list_offsets), L.C, n, "list offsets");
      // what a search reads of the centres: int8 levels in blocks (centres.h), a quarter of
      // the bytes
      centre_blocks_.resize(static_cast<size_t>(centre_blocks(L.C) * centre_block_bytes(L.dim)));
      centre_steps_.resize(L.C);
      block_centres(L.centres, L.C, L.dim, centre_blocks_.data(), centre_steps_.data());
      L.centre_blocks = centre_blocks_.data();
      L.centre_steps = centre_steps_.data();
      // what an ivf search reads of the codes (the scan, the re-score, filtered rows): a copy
      // in blocks (asymmetric.h, fast scan); the row-major codes stay untouched (mmap: on disk)
      blocked_.assign((n + kScanBlock - 1) / kScanBlock * kScanBlock * nb, 0);
      block_codes(v_.codes.data, n, static_cast<int>(nb), blocked_.data());
      L.blocked = blocked_.data();
      require_dtype(f, py::dtype::of<float>(), "factors", "float32");
      require_shape(f, "factors", {n});
      L.factors = static_cast<const float*>(f.data());
      for (int64_t r = 0; r < n; ++r)
        if (!std::isfinite(L.factors[r])) fail("factors must be finite");
      if (!is_set(biases)) fail("an ivf snapshot needs one bias a row");
      const py::array b = keep(biases);
      require_dtype(b, py::dtype::of<float>(), "biases", "float32");
      require_shape(b, "biases", {n});
      L.biases = static_cast<const float*>(b.data());
      for (int64_t r = 0; r < n; ++r)
        if (!std::isfinite(L.biases[r])) fail("biases must be finite");
      const py::array rl = keep(lists);
      require_dtype(rl, py::dtype::of<int32_t>(), "lists", "int32");
      require_shape(rl, "lists", {n});
      if (L.C > kMaxLists)
        fail("an ivf snapshot holds at most " + std::to_string(kMaxLists) + " lists");
      // a search reads its own uint16 copy (MAX_GROUPS lists fit): half the bytes
      const int32_t* given = static_cast<const int32_t*>(rl.data());
      lists16_.resize(n);
      for (int64_t g = 0; g < L.C; ++g)  // each row's list agrees with the offsets
        for (int64_t r = L.offsets[g]; r < L.offsets[g + 1]; ++r) {
          if (given[r] != g) fail("each row's list must match the list offsets");
          lists16_[r] = static_cast<uint16_t>(g);
        }
      L.row_lists = lists16_.data();
      centre_norms_.resize(L.C);
      for (int64_t g = 0; g < L.C; ++g) {
        double sq = 0;
        for (int d = 0; d < L.dim; ++d)
          sq += double(L.centres[g * L.dim + d]) * L.centres[g * L.dim + d];
        centre_norms_[g] = static_cast<float>(sq);
      }
      L.centre_norms = centre_norms_.data();
      if (is_set(error_levels)) {
        const py::array el = keep(error_levels);
        require_dtype(el, py::dtype::of<uint8_t>(), "error levels", "uint8");
        require_shape(el, "error levels", {n});
        L.error_levels = static_cast<const uint8_t*>(el.data());
      }
      if (is_set(extra)) {
        const py::array e = keep(extra);
        require_dtype(e, py::dtype::of<uint8_t>(), "extra bits", "uint8");
        require_shape(e, "extra bits", {n, -1});
        const int64_t planes = e.shape(1) / nb;  // the extra ones and the sign code
        if (e.shape(1) % nb || planes < 2 || planes > kMaxExtraBits + 1)
          fail("extra bits must be 2 to " + std::to_string(kMaxExtraBits + 1) +
               " planes of the code's width a row");
        L.extra = static_cast<const uint8_t*>(e.data());
        L.extra_planes = static_cast<int>(planes);
        for (int64_t r = 0; r < n; ++r)  // the top plane is the sign code
          if (std::memcmp(L.extra + (r * planes + planes - 1) * nb, v_.codes.data + r * nb, nb))
            fail("the extra bits' top plane must be each row's code");
        if (!is_set(extra_factors) || !is_set(extra_biases))
          fail("extra bits need one factor and one bias a row");
        const py::array ef = keep(extra_factors), eb = keep(extra_biases);
        for (const auto& [a, name] : {std::pair{ef, "extra factors"}, {eb, "extra biases"}}) {
          require_dtype(a, py::dtype::of<float>(), name, "float32");
          require_shape(a, name, {n});
          const float* v = static_cast<const float*>(a.data());
          for (int64_t r = 0; r < n; ++r)
            if (!std::isfinite(v[r])) fail(std::string(name) + " must be finite");
        }
        L.extra_factors = static_cast<const float*>(ef.data());
        L.extra_biases = static_cast<const float*>(eb.data());
      }
      if (is_set(list_radii)) {
        const py::array lr = keep(list_radii);
        require_dtype(lr, py::dtype::of<float>(), "list radii", "float32");
        require_shape(lr, "list radii", {L.C});
        L.radii = static_cast<const float*>(lr.data());
        for (int64_t g = 0; g < L.C; ++g)
          if (!(L.radii[g] >= 0) || !std::isfinite(L.radii[g]))
            fail("list radii must be finite and >= 0");
      }
    }
    if (is_set(vectors)) set_store(vectors, scales, slots, n, dim);
  }

  Snapshot(const Snapshot&) = delete;  // the view points into segments_
  Snapshot& operator=(const Snapshot&) = delete;

  // queries: float (nq, dim) vectors, or packed (nq, nbytes) codes; filter: a row bitmap with a
  // spare word and, for the allowed-rows source, the allowed rows in increasing order.
  py::tuple search(const py::array& queries, const Plan& plan, const py::object& filter_bits,
                   const py::object& filter_rows) const {
    Queries q;
    q.n = queries.ndim() ? queries.shape(0) : 0;
    if (has_dtype(queries, py::dtype::of<uint8_t>())) {
      require_shape(queries, "query codes", {-1, v_.codes.nbytes});
      q.codes = static_cast<const uint8_t*>(queries.data());
      if (plan.scoring != Scoring::kHamming || plan.rerank)
        fail("codes as queries allow Hamming scoring without rerank only");
    } else {
      require_dtype(queries, py::dtype::of<float>(), "queries", "float32 (or uint8 codes)");
      const int dim = v_.transform.active() ? v_.transform.dim : v_.store.dim;
      require_shape(queries, "queries", {-1, dim});
      if (!v_.transform.active()) fail("this snapshot has no projection: search it with codes");
      q.vectors = static_cast<const float*>(queries.data());
      q.dim = dim;
      q.normalize = normalize_;
      check_queries(q);
    }
    check_plan(plan);
    RowFilter f;
    py::array bits, rows;
    if (is_set(filter_bits)) {
      bits = filter_bits.cast<py::array>();
      require_dtype(bits, py::dtype::of<uint64_t>(), "filter bitmap", "uint64");
      require_shape(bits, "filter bitmap", {(v_.codes.n + 63) / 64 + 1});
      f.bits = static_cast<const uint64_t*>(bits.data());
      if (is_set(filter_rows)) {
        rows = filter_rows.cast<py::array>();
        require_dtype(rows, py::dtype::of<int64_t>(), "allowed rows", "int64");
        require_shape(rows, "allowed rows", {-1});
        f.rows = static_cast<const int64_t*>(rows.data());
        f.n_rows = rows.shape(0);
        for (int64_t j = 0; j < f.n_rows; ++j)
          if (f.rows[j] < 0 || f.rows[j] >= v_.codes.n || (j && f.rows[j] <= f.rows[j - 1]))
            fail("allowed rows must be increasing rows of the snapshot");
      }
    }
    if (plan.source == Source::kAllowed && !f.rows) fail("the allowed-rows source needs the rows");
    const bool distances =
        (plan.scoring == Scoring::kHamming && !plan.rerank) || plan.quantized_only;
    Output out;
    Results r;
    const std::vector<py::ssize_t> shape{q.n, plan.k};
    if (distances) {
      out.distances = py::array_t<int32_t>(shape);
      r.distances = out.distances.mutable_data();
    } else {
      out.scores = py::array_t<float>(shape);
      r.scores = out.scores.mutable_data();
    }
    out.ids = py::array_t<int64_t>(shape);
    r.ids = out.ids.mutable_data();
    {
      py::gil_scoped_release nogil;
      const EngineOps& ops = engine();  // the ISA, chosen once for the whole call
      ops.search(v_, plan, q, f, r);
    }
    return py::make_tuple(distances ? py::object(out.distances) : py::object(out.scores), out.ids,
                          r.scanned, r.reranked);
  }

  // Arrays this snapshot holds in its own layout, by the name of the input a search then never
  // reads (an index loaded with mmap leaves it on disk): their sizes in bytes.
  py::dict copies() const {
    py::dict d;
    if (!blocked_.empty()) d["codes"] = blocked_.size();
    if (!ids32_.empty()) d["ids"] = ids32_.size() * sizeof(int32_t);
    if (!lists16_.empty()) d["lists"] = lists16_.size() * sizeof(uint16_t);
    const size_t levels = centre_blocks_.size() + centre_steps_.size() * sizeof(float);
    if (levels) d["list_centres"] = levels;
    return d;
  }

  int64_t n() const { return v_.codes.n; }
  bool normalize() const { return normalize_; }
  void set_normalize(bool v) { normalize_ = v; }
  int n_bits() const { return v_.codes.n_bits(); }

 private:
  // The stored vectors: one array or a list of segments (each (m, dim), one dtype), int8 with
  // a scale a row; slots (int64, one a row, each < the segments' rows) place rows in them.
  void set_store(const py::object& vectors, const py::object& scales, const py::object& slots,
                 int64_t n, int dim) {
    const bool listed = py::isinstance<py::list>(vectors) || py::isinstance<py::tuple>(vectors);
    const py::list segs = listed ? py::list(vectors) : py::list(py::make_tuple(vectors));
    const py::list scs = !is_set(scales) ? py::list()
                         : listed        ? py::list(scales)
                                         : py::list(py::make_tuple(scales));
    if (segs.size() < 1 || segs.size() > kMaxSegments)
      fail("a store has from 1 to " + std::to_string(kMaxSegments) + " segments");
    VectorStore& S = v_.store;
    int64_t total = 0;
    for (size_t i = 0; i < segs.size(); ++i) {
      const py::array vx = keep(segs[i]);
      require_shape(vx, "vectors", {-1, dim ? dim : (i ? S.dim : -1)});
      StoreType type = StoreType::kNone;
      size_t elem = 0;
      if (has_dtype(vx, py::dtype::of<float>())) {
        type = StoreType::kFloat32, elem = 4;
      } else if (has_dtype(vx, py::dtype("float16"))) {
        type = StoreType::kFloat16, elem = 2;
      } else if (has_dtype(vx, py::dtype::of<int8_t>())) {
        type = StoreType::kInt8, elem = 1;
      } else {
        fail_dtype("stored vectors must be float32, float16 or int8, got " +
                   std::string(py::str(vx.dtype())));
      }
      if (i && type != S.type) fail("every store segment must have the same dtype");
      S.type = type;
      S.dim = static_cast<int>(vx.shape(1));
      if (S.dim < 1 || S.dim > kMaxDim)
        fail("the embedding dimension must be from 1 to " + std::to_string(kMaxDim));
      S.row_bytes = elem * S.dim;
      VectorSegment g;
      g.data = vx.data();
      total += vx.shape(0);
      g.end = total;
      if (type == StoreType::kInt8) {
        if (scs.size() != segs.size()) fail("an int8 store needs one scale a row");
        const py::array sc = keep(scs[i]);
        require_dtype(sc, py::dtype::of<float>(), "scales", "float32");
        require_shape(sc, "scales", {vx.shape(0)});
        g.scales = static_cast<const float*>(sc.data());
      }
      segments_.push_back(g);
    }
    if (is_set(slots)) {
      const py::array sl = keep(slots);
      require_dtype(sl, py::dtype::of<int64_t>(), "slots", "int64");
      require_shape(sl, "slots", {n});
      S.slots = static_cast<const int64_t*>(sl.data());
      for (int64_t r = 0; r < n; ++r)
        if (S.slots[r] < 0 || S.slots[r] >= total) fail("slots must lie in the store");
    } else if (total != n) {
      fail("without slots the store needs one vector a row");
    }
    S.segments = segments_.data();
    S.n_segments = static_cast<int>(segments_.size());
  }

  py::array keep(const py::object& o) {
    if (!py::isinstance<py::array>(o)) fail_dtype("expected a numpy array");
    py::array a = py::reinterpret_borrow<py::array>(o);
    kept_.push_back(a);
    return a;
  }

  // A plan the engine cannot run safely (arrays it would read are absent, a stage it has no code
  // for). What options mean, and the messages users see, are python/hashpivot/plan.py's.
  void check_plan(const Plan& p) const {
    if (p.k < 0 || p.pool < 0 || p.candidates < 0 || p.nprobe < 0 || p.threads < 0)
      fail("k, pool, candidates, nprobe and threads must be >= 0");
    if (p.threshold >= 0 && !v_.pivots.P) fail("a pivot threshold needs pivots");
    if (p.threshold >= 0 && p.scoring == Scoring::kAsymmetric && !p.hamming_first)
      fail("the pivot band filters the Hamming ranking: asymmetric scoring needs hamming_first");
    if (p.source == Source::kBand && p.threshold < 0) fail("the band source needs a threshold");
    if (p.source == Source::kPartitions && !v_.parts.C) fail("this snapshot has no partitions");
    if (p.source == Source::kLists && !v_.lists.C) fail("this snapshot has no lists");
    if (p.source == Source::kLists && p.scoring != Scoring::kAsymmetric)
      fail("lists are scored asymmetrically");
    if (p.rerank && v_.store.type == StoreType::kNone) fail("rerank needs stored vectors");
    if (p.rerank && v_.transform.active() && v_.store.dim != v_.transform.dim)
      fail("stored vectors and projection differ in dimension");
    if (p.exact_allowed && !p.rerank) fail("exact_allowed needs rerank");
    if (p.quantized_only && (p.rerank || p.scoring != Scoring::kAsymmetric))
      fail("quantized_only is the asymmetric first stage alone (no rerank)");
  }

  // Every query finite and non-zero (exactly: a tiny vector still has a direction).
  static void check_queries(const Queries& q) {
    for (int64_t i = 0; i < q.n; ++i) {
      const float* x = q.vectors + i * q.dim;
      bool any = false, finite = true;
      for (int d = 0; d < q.dim; ++d) {
        any |= x[d] != 0;
        finite &= std::isfinite(x[d]);
      }
      if (!finite)
        throw NonFiniteError("queries contain NaN or inf (query " + std::to_string(i) + ")");
      if (!any)
        throw ZeroVectorError("query " + std::to_string(i) +
                              " is a zero vector: an all-zero embedding has no direction (did "
                              "the encoder fail?)");
    }
  }

  SnapshotView v_;
  bool normalize_ = false;
  std::vector<uint8_t> centre_blocks_;
  std::vector<float> centre_steps_;
  std::vector<uint8_t> blocked_;
  std::vector<int32_t> ids32_;
  std::vector<uint16_t> lists16_;
  std::vector<float> centre_norms_;
  std::vector<py::array> kept_;
  std::vector<VectorSegment> segments_;
};

py::tuple run_search_codes(const SnapshotView& v, const Plan& p, const Queries& qs);

py::tuple knn_py(const py::array& queries, const py::array& codes, int k, int threads,
                 const py::object& pivots, const py::object& table, const py::object& lo,
                 const py::object& hi) {
  // Hamming top-k of raw codes (pivot band: rows whose table row lies in [lo, hi] per pivot)
  const CodeView q = as_codes(queries, "queries");
  const CodeView c = as_codes(codes, "codes");
  require_same_width(q, c);
  if (k < 0) fail("k must be >= 0");
  SnapshotView v;
  v.codes = c;
  Plan p;
  p.k = k;
  p.scoring = Scoring::kHamming;
  p.pool = p.candidates = k;
  p.threads = as_threads(threads);
  py::array lo_a, hi_a, tb;
  if (is_set(table)) {
    tb = table.cast<py::array>();
    const int P = tb.ndim() == 2 ? static_cast<int>(tb.shape(1)) : 0;
    if (P < 1 || P > kMaxPivots)
      fail("pivot table must be (n, n_pivots <= " + std::to_string(kMaxPivots) + ")");
    require_dtype(tb, table_dtype(c.n_bits()), "pivot table", table_dtype_name(c.n_bits()));
    require_shape(tb, "pivot table", {c.n, P});
    lo_a = lo.cast<py::array>();
    hi_a = hi.cast<py::array>();
    require_dtype(lo_a, py::dtype::of<int32_t>(), "lo", "int32");
    require_dtype(hi_a, py::dtype::of<int32_t>(), "hi", "int32");
    require_shape(lo_a, "lo", {q.n, P});
    require_shape(hi_a, "hi", {q.n, P});
    (void)pivots;
    v.pivots = {nullptr, tb.data(), wide_table(c.n_bits()), P};
  }
  Queries qs;
  qs.n = q.n;
  qs.codes = q.data;
  if (v.pivots.P) {
    p.source = Source::kBand;
    p.threshold = 0;  // the band's bounds are given
    qs.lo = static_cast<const int32_t*>(lo_a.data());
    qs.hi = static_cast<const int32_t*>(hi_a.data());
  }
  return run_search_codes(v, p, qs);
}

// Runs a Hamming search without the GIL: (distances int32, ids int64).
py::tuple run_search_codes(const SnapshotView& v, const Plan& p, const Queries& qs) {
  py::array_t<int32_t> D({qs.n, static_cast<int64_t>(p.k)});
  py::array_t<int64_t> I({qs.n, static_cast<int64_t>(p.k)});
  Results r{nullptr, D.mutable_data(), I.mutable_data(), 0};
  {
    py::gil_scoped_release nogil;
    const EngineOps& ops = engine();
    ops.search(v, p, qs, RowFilter{}, r);
  }
  return py::make_tuple(D, I);
}

py::tuple range_py(const py::array& queries, const py::array& codes, int radius, int threads) {
  const CodeView q = as_codes(queries, "queries");
  const CodeView c = as_codes(codes, "codes");
  require_same_width(q, c);
  if (radius < 0) fail("radius must be >= 0, got " + std::to_string(radius));
  radius = std::min(radius, c.n_bits());  // every distance is <= n_bits
  as_threads(threads);
  std::vector<std::vector<Scored<int32_t>>> res;
  {
    py::gil_scoped_release nogil;
    res = engine().range_search(q.data, q.n, c, radius, threads);
  }
  py::array_t<int64_t> lims(q.n + 1);
  int64_t total = 0;
  lims.mutable_data()[0] = 0;
  for (int64_t j = 0; j < q.n; ++j) lims.mutable_data()[j + 1] = (total += res[j].size());
  py::array_t<int32_t> D(total);
  py::array_t<int64_t> I(total);
  int64_t o = 0;
  for (auto& part : res)
    for (auto& s : part) {
      D.mutable_data()[o] = s.key;
      I.mutable_data()[o++] = s.row;
    }
  return py::make_tuple(lims, D, I);
}

py::array_t<int32_t> distances_py(const py::array& queries, const py::array& codes, int threads) {
  const CodeView q = as_codes(queries, "queries");
  const CodeView c = as_codes(codes, "codes");
  require_same_width(q, c);
  as_threads(threads);
  py::array_t<int32_t> out({q.n, c.n});
  int32_t* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    engine().distances(q.data, q.n, c, threads, o);
  }
  return out;
}

py::array_t<int64_t> pivot_filter_py(const py::array& table, const py::array& lo,
                                     const py::array& hi, int64_t begin, int64_t end, int threads) {
  PivotTable piv;
  if (has_dtype(table, py::dtype::of<uint8_t>()))
    piv.wide = false;
  else if (has_dtype(table, py::dtype::of<uint16_t>()))
    piv.wide = true;
  else
    fail_dtype("pivot table must have dtype uint8 or uint16, got " +
               std::string(py::str(table.dtype())));
  require_shape(table, "pivot table", {-1, -1});
  piv.P = static_cast<int>(table.shape(1));
  if (piv.P < 1 || piv.P > kMaxPivots)
    fail("n_pivots must be from 1 to " + std::to_string(kMaxPivots));
  piv.table = table.data();
  require_dtype(lo, py::dtype::of<int32_t>(), "lo", "int32");
  require_dtype(hi, py::dtype::of<int32_t>(), "hi", "int32");
  require_shape(lo, "lo", {1, piv.P});
  require_shape(hi, "hi", {1, piv.P});
  as_threads(threads);
  const int64_t n = table.shape(0);
  begin = std::max<int64_t>(0, begin);
  end = std::min<int64_t>(n, end < 0 ? n : end);
  std::vector<int64_t> rows;
  {
    py::gil_scoped_release nogil;
    rows = engine().band_filter_rows(piv, n, static_cast<const int32_t*>(lo.data()),
                                     static_cast<const int32_t*>(hi.data()), begin, end, threads);
  }
  py::array_t<int64_t> out(static_cast<int64_t>(rows.size()));
  std::copy(rows.begin(), rows.end(), out.mutable_data());
  return out;
}

// z = (x - mean) @ projection and the packed signs: (z or None, codes or None).
py::tuple encode_py(const py::array& x, const py::object& mean, const py::array& projection,
                    bool want_z, bool want_codes, int threads) {
  require_dtype(projection, py::dtype::of<float>(), "projection", "float32");
  require_shape(projection, "projection", {-1, -1});
  Transform t;
  t.dim = static_cast<int>(projection.shape(0));
  t.n_bits = static_cast<int>(projection.shape(1));
  t.proj = static_cast<const float*>(projection.data());
  if (t.n_bits % 64 || t.n_bits < kMinBits || t.n_bits > kMaxBits)
    fail("n_bits must be a multiple of 64 from " + std::to_string(kMinBits) + " to " +
         std::to_string(kMaxBits));
  py::array m;
  if (is_set(mean)) {
    m = mean.cast<py::array>();
    require_dtype(m, py::dtype::of<float>(), "mean", "float32");
    require_shape(m, "mean", {t.dim});
    t.mean = static_cast<const float*>(m.data());
  }
  require_dtype(x, py::dtype::of<float>(), "embeddings", "float32");
  require_shape(x, "embeddings", {-1, t.dim});
  as_threads(threads);
  const int64_t n = x.shape(0);
  py::object z = py::none(), codes = py::none();
  float* zp = nullptr;
  uint8_t* cp = nullptr;
  if (want_z) {
    py::array_t<float> a({n, static_cast<int64_t>(t.n_bits)});
    zp = a.mutable_data();
    z = a;
  }
  if (want_codes) {
    py::array_t<uint8_t> a({n, static_cast<int64_t>(t.n_bits / 8)});
    cp = a.mutable_data();
    codes = a;
  }
  {
    py::gil_scoped_release nogil;
    engine().encode(t, static_cast<const float*>(x.data()), n, zp, cp, threads);
  }
  return py::make_tuple(z, codes);
}

const float* as_projections(const py::array& z, const CodeView& c) {
  require_dtype(z, py::dtype::of<float>(), "projections", "float32");
  require_shape(z, "projections", {-1, c.n_bits()});
  return static_cast<const float*>(z.data());
}

// Asymmetric top-k of raw codes: the quantized scan keeps `pool`, exact float scores choose k:
// (scores float32, ids); with exact=false the quantized scan's own top-k: (distances int32, ids).
py::tuple asym_knn_py(const py::array& z, const py::array& codes, int k, int pool, int threads,
                      bool exact) {
  const CodeView c = as_codes(codes, "codes");
  const float* zp = as_projections(z, c);
  if (k < 0 || pool < k) fail("k must be >= 0 and pool >= k");
  SnapshotView v;
  v.codes = c;
  Plan p;
  p.k = p.candidates = k;
  p.pool = exact ? pool : k;
  p.scoring = Scoring::kAsymmetric;
  p.quantized_only = !exact;
  p.threads = as_threads(threads);
  Queries qs;
  qs.n = z.shape(0);
  qs.projections = zp;
  py::array_t<float> S;
  py::array_t<int32_t> D;
  py::array_t<int64_t> I({qs.n, static_cast<int64_t>(k)});
  Results r{nullptr, nullptr, I.mutable_data(), 0};
  if (exact) {
    S = py::array_t<float>({qs.n, static_cast<int64_t>(k)});
    r.scores = S.mutable_data();
  } else {
    D = py::array_t<int32_t>({qs.n, static_cast<int64_t>(k)});
    r.distances = D.mutable_data();
  }
  {
    py::gil_scoped_release nogil;
    engine().search(v, p, qs, RowFilter{}, r);
  }
  return py::make_tuple(exact ? py::object(S) : py::object(D), I);
}

py::tuple asym_rescore_py(const py::array& z, const py::array& codes, const py::array& cand, int k,
                          int threads) {
  const CodeView c = as_codes(codes, "codes");
  const float* zp = as_projections(z, c);
  require_dtype(cand, py::dtype::of<int64_t>(), "candidates", "int64");
  require_shape(cand, "candidates", {z.shape(0), -1});
  if (k < 0) fail("k must be >= 0");
  as_threads(threads);
  const int64_t nq = z.shape(0), M = cand.shape(1);
  const int64_t* cp = static_cast<const int64_t*>(cand.data());
  for (int64_t j = 0; j < nq * M; ++j)
    if (cp[j] >= c.n || cp[j] < -1) fail("candidate row out of range");
  py::array_t<float> S({nq, static_cast<int64_t>(k)});
  py::array_t<int64_t> R({nq, static_cast<int64_t>(k)});
  float* s = S.mutable_data();
  int64_t* r = R.mutable_data();
  {
    py::gil_scoped_release nogil;
    engine().asym_rescore(zp, nq, c, cp, M, k, threads, s, r);
  }
  return py::make_tuple(S, R);
}

// Each row's cell in the flat layout (the sort key of its rows): cell_key in snapshot.h.
py::array_t<int64_t> cell_keys_py(const py::array& table, int levels, int n_bits) {
  if (levels < 1 || levels > kMaxSortedLevels)
    fail("levels must be from 1 to " + std::to_string(kMaxSortedLevels));
  require_dtype(table, table_dtype(n_bits), "pivot table", table_dtype_name(n_bits));
  require_shape(table, "pivot table", {-1, -1});
  const int64_t n = table.shape(0), P = table.shape(1);
  if (P < levels) fail("levels must be at most n_pivots");
  py::array_t<int64_t> out(n);
  int64_t* o = out.mutable_data();
  auto fill = [&](const auto* t) {
    for (int64_t r = 0; r < n; ++r)
      o[r] = cell_key(t[r * P], levels > 1 ? t[r * P + 1] : 0, levels, n_bits);
  };
  if (!wide_table(n_bits))
    fill(static_cast<const uint8_t*>(table.data()));
  else
    fill(static_cast<const uint16_t*>(table.data()));
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "hashpivot's compiled core: the search engine and its kernels";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const NonFiniteError& e) {
      PyErr_SetString(py::module_::import("hashpivot.errors").attr("NonFiniteError").ptr(),
                      e.what());
    } catch (const ZeroVectorError& e) {
      PyErr_SetString(py::module_::import("hashpivot.errors").attr("ZeroVectorError").ptr(),
                      e.what());
    } catch (const DtypeError& e) {
      PyErr_SetString(py::module_::import("hashpivot.errors").attr("InvalidTypeError").ptr(),
                      e.what());
    } catch (const InputError& e) {
      PyErr_SetString(py::module_::import("hashpivot.errors").attr("InvalidInputError").ptr(),
                      e.what());
    }
  });
  m.attr("MIN_BITS") = kMinBits;
  m.attr("MAX_BITS") = kMaxBits;
  m.attr("MAX_PIVOTS") = kMaxPivots;
  m.attr("MAX_DIM") = kMaxDim;
  m.attr("MAX_SEGMENTS") = kMaxSegments;
  m.attr("MAX_SORTED_LEVELS") = kMaxSortedLevels;
  m.attr("NARROW_TABLE_MAX_BITS") = kNarrowTableMaxBits;
  m.attr("MAX_LISTS") = kMaxLists;
  m.attr("ERROR_LEVEL_NONE") = kErrorLevelNone;
  m.attr("MAX_EXTRA_BITS") = kMaxExtraBits;
  m.def(
      "error_levels",
      [](const py::array_t<float, py::array::c_style | py::array::forcecast>& norms) {
        py::array_t<uint8_t> out(norms.size());
        const float* v = norms.data();
        uint8_t* o = out.mutable_data();
        for (py::ssize_t i = 0; i < norms.size(); ++i) o[i] = error_level(v[i]);
        return out;
      },
      py::arg("norms"), "Error norms to one-byte levels (rounded up; 255: none)");
  m.def(
      "error_norms",
      [](const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& levels) {
        py::array_t<float> out(levels.size());
        for (py::ssize_t i = 0; i < levels.size(); ++i)
          out.mutable_data()[i] = error_norms()[levels.data()[i]];
        return out;
      },
      py::arg("levels"), "What each one-byte error level stands for (inf: none)");
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["isa"] = isa_name(engine().isa);
    d["best_isa"] = isa_name(f.best);
    d["popcnt"] = f.popcnt;
    d["avx2"] = f.avx2;
    d["avx512_vpopcntdq"] = f.avx512_vpopcntdq;
    d["avx512_vnni"] = f.avx512_vnni;
    d["threads"] = ThreadPool::get().max_threads();
    return d;
  });
  m.def("set_isa", [](const std::string& name) {
    Isa isa;
    if (!parse_isa(name, &isa))
      fail("unknown isa '" + name + "'; use portable, popcnt, avx2 or avx512");
    set_isa(isa);
  });

  py::enum_<Scoring>(m, "Scoring")
      .value("hamming", Scoring::kHamming)
      .value("asymmetric", Scoring::kAsymmetric);
  py::enum_<Source>(m, "Source")
      .value("all", Source::kAll)
      .value("band", Source::kBand)
      .value("partitions", Source::kPartitions)
      .value("lists", Source::kLists)
      .value("allowed", Source::kAllowed);
  py::class_<Plan>(m, "Plan", "One search's settings, as hashpivot.plan makes them")
      .def(py::init<>())
      .def_readwrite("k", &Plan::k)
      .def_readwrite("scoring", &Plan::scoring)
      .def_readwrite("source", &Plan::source)
      .def_readwrite("pool", &Plan::pool)
      .def_readwrite("candidates", &Plan::candidates)
      .def_readwrite("hamming_first", &Plan::hamming_first)
      .def_readwrite("threshold", &Plan::threshold)
      .def_readwrite("nprobe", &Plan::nprobe)
      .def_readwrite("probe_rows", &Plan::probe_rows)
      .def_readwrite("probe_spread", &Plan::probe_spread)
      .def_readwrite("bound", &Plan::bound)
      .def_readwrite("reestimate", &Plan::reestimate)
      .def_readwrite("rerank", &Plan::rerank)
      .def_readwrite("exact_allowed", &Plan::exact_allowed)
      .def_readwrite("quantized_only", &Plan::quantized_only)
      .def_readwrite("threads", &Plan::threads);
  py::class_<Snapshot>(m, "Snapshot", "An immutable version of an index's rows, validated once")
      .def(py::init<const py::array&, const py::object&, const py::object&, const py::object&,
                    const py::object&, const py::object&, const py::object&, int, const py::object&,
                    const py::object&, const py::object&, const py::object&, const py::object&,
                    const py::object&, const py::object&, const py::object&, const py::object&,
                    const py::object&, const py::object&, const py::object&, const py::object&,
                    const py::object&, const py::object&, const py::object&, const py::object&>(),
           py::arg("codes"), py::arg("ids") = py::none(), py::arg("mean") = py::none(),
           py::arg("projection") = py::none(), py::arg("pivots") = py::none(),
           py::arg("table") = py::none(), py::arg("cells") = py::none(), py::arg("levels") = 0,
           py::arg("centres") = py::none(), py::arg("part_offsets") = py::none(),
           py::arg("radius") = py::none(), py::arg("cdist") = py::none(),
           py::arg("list_centres") = py::none(), py::arg("list_offsets") = py::none(),
           py::arg("factors") = py::none(), py::arg("lists") = py::none(),
           py::arg("vectors") = py::none(), py::arg("scales") = py::none(),
           py::arg("slots") = py::none(), py::arg("biases") = py::none(),
           py::arg("list_radii") = py::none(), py::arg("error_levels") = py::none(),
           py::arg("extra") = py::none(), py::arg("extra_factors") = py::none(),
           py::arg("extra_biases") = py::none())
      .def("search", &Snapshot::search, py::arg("queries"), py::arg("plan"),
           py::arg("filter_bits") = py::none(), py::arg("filter_rows") = py::none())
      .def_property("normalize", &Snapshot::normalize, &Snapshot::set_normalize,
                    "scale float queries to unit length (cosine)")
      .def_property_readonly("n", &Snapshot::n)
      .def_property_readonly("n_bits", &Snapshot::n_bits)
      .def_property_readonly("copies", &Snapshot::copies);

  m.def("knn", &knn_py, py::arg("queries"), py::arg("codes"), py::arg("k"), py::arg("threads") = 0,
        py::arg("pivots") = py::none(), py::arg("table") = py::none(), py::arg("lo") = py::none(),
        py::arg("hi") = py::none());
  m.def("cell_keys", &cell_keys_py, py::arg("table"), py::arg("levels"), py::arg("n_bits"));
  m.def("range_search", &range_py, py::arg("queries"), py::arg("codes"), py::arg("radius"),
        py::arg("threads") = 0);
  m.def("distances", &distances_py, py::arg("queries"), py::arg("codes"), py::arg("threads") = 0);
  m.def("pivot_filter", &pivot_filter_py, py::arg("table"), py::arg("lo"), py::arg("hi"),
        py::arg("begin") = 0, py::arg("end") = -1, py::arg("threads") = 0);
  m.def("encode", &encode_py, py::arg("x"), py::arg("mean"), py::arg("projection"),
        py::arg("want_z") = false, py::arg("want_codes") = true, py::arg("threads") = 0);
  m.def("asym_knn", &asym_knn_py, py::arg("projections"), py::arg("codes"), py::arg("k"),
        py::arg("pool"), py::arg("threads") = 0, py::arg("exact") = true);
  m.def("asym_rescore", &asym_rescore_py, py::arg("projections"), py::arg("codes"),
        py::arg("candidates"), py::arg("k"), py::arg("threads") = 0);
}
