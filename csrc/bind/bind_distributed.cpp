// The two primitives of the shared-memory gradient exchange between the processes of one
// machine (python/cnnfast/distributed/exchange.py):
//   - atomic counters in memory every process maps (an MPI-3 shared window): the last
//     process to hand over a parameter's gradient is the one that averages it, and it tells
//     the others it is done. std::atomic_ref is not needed: the GCC builtins on an aligned
//     int64 are lock-free on every 64-bit target, which is what sharing across processes
//     requires (a lock inside an object would live in one process only);
//   - the averaging itself, in one pass: the sum over ranks of each rank's scaled gradient
//     written into every rank's slot. numpy needs a scale, one add per peer and one copy
//     per peer; every pass over ResNet-18's 42.7 MB of gradients costs ~3 ms here.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bind/array.h"
#include "bind/families.h"
#include "core/parallel.h"

namespace cnnfast::bind {
namespace {

int64_t* counter_at(py::array& counters, int64_t index) {
  require_dtype(counters, "counters", py::dtype::of<int64_t>());
  require_contiguous(counters, "counters");
  require_writeable(counters, "counters");
  CNNFAST_CHECK(index >= 0 && index < counters.size(), ValueError, "index: expected 0 <= index < ",
                counters.size(), ", got ", index);
  return mptr<int64_t>(counters) + index;
}

int64_t shm_fetch_add(py::array& counters, int64_t index, int64_t delta) {
  return __atomic_fetch_add(counter_at(counters, index), delta, __ATOMIC_ACQ_REL);
}

int64_t shm_load(py::array& counters, int64_t index) {
  return __atomic_load_n(counter_at(counters, index), __ATOMIC_ACQUIRE);
}

void shm_store(py::array& counters, int64_t index, int64_t value) {
  __atomic_store_n(counter_at(counters, index), value, __ATOMIC_RELEASE);
}

// slots[k] = scale * (the sum over ranks k' in rank order of term k'), where term k' is
// own for k' == me when own is given, slots[k'] where include[k'], and nothing otherwise.
// One computation writes every slot, so every rank holds the same bits, and the fixed
// order makes them independent of which rank happened to average.
void mean_into_slots(const py::list& slot_list, const py::list& include_list, const py::object& own_obj,
                     int64_t me, double scale) {
  const auto n = static_cast<int64_t>(slot_list.size());
  CNNFAST_CHECK(n >= 1, ValueError, "slots: expected at least one array");
  CNNFAST_CHECK(static_cast<int64_t>(include_list.size()) == n, ValueError, "include: expected ", n,
                " flags (one per slot), got ", include_list.size());
  std::vector<bool> include;
  for (const auto& flag : include_list) include.push_back(flag.cast<bool>());
  CNNFAST_CHECK(me >= 0 && me < n, ValueError, "me: expected 0 <= me < ", n, ", got ", me);
  std::vector<py::array> slots;
  for (int64_t k = 0; k < n; ++k) {
    CNNFAST_CHECK(py::isinstance<py::array>(slot_list[k]), TypeError, "slots[", k, "]: expected a NumPy array");
    slots.push_back(slot_list[k].cast<py::array>());
    const std::string name = cat("slots[", k, "]");
    input(slots[k], name.c_str());
    require_writeable(slots[k], name.c_str());
    if (k > 0) {
      require_same_dtype(slots[0], "slots[0]", slots[k], name.c_str());
      CNNFAST_CHECK(slots[k].size() == slots[0].size(), ValueError, name, ": expected ", slots[0].size(),
                    " elements (as slots[0]), got ", slots[k].size());
      for (int64_t j = 0; j < k; ++j)
        CNNFAST_CHECK(!overlaps(slots[k], slots[j]), ValueError, name, " shares memory with slots[", j, "]");
    }
  }
  py::array own;
  const bool has_own = !own_obj.is_none();
  if (has_own) {
    CNNFAST_CHECK(py::isinstance<py::array>(own_obj), TypeError, "own: expected a NumPy array or None");
    own = own_obj.cast<py::array>();
    input(own, "own");
    require_same_dtype(slots[0], "slots[0]", own, "own");
    CNNFAST_CHECK(own.size() == slots[0].size(), ValueError, "own: expected ", slots[0].size(), " elements, got ",
                  own.size());
    for (int64_t k = 0; k < n; ++k)  // read before written, element by element: only the own slot itself may alias
      CNNFAST_CHECK(!overlaps(own, slots[k]) || (k == me && own.data() == slots[k].data()), ValueError,
                    "own shares memory with slots[", k, "]");
  }
  bool any = has_own;
  for (int64_t k = 0; k < n; ++k) any = any || include[k];
  CNNFAST_CHECK(any, ValueError, "include: no rank contributes (pass own or include a slot)");

  const int64_t count = slots[0].size();
  dispatch_float(float_dtype(slots[0], "slots[0]"), [&](auto tag) {
    using T = decltype(tag);
    std::vector<const T*> terms;
    std::vector<T*> outs;
    for (int64_t k = 0; k < n; ++k) {
      if (k == me && has_own)
        terms.push_back(cptr<T>(own));
      else if (include[k])
        terms.push_back(cptr<T>(slots[k]));
      outs.push_back(mptr<T>(slots[k]));
    }
    const T s = T(scale);
    py::gil_scoped_release nogil;
    // Blocks that stay in L1 between the sum and the copies out; 16-byte vectors by hand,
    // as in _scale_add (this file is built for the baseline ISA, whose vectoriser left
    // scalar loops).
    parallel_for(0, count, int64_t(1) << 16, [&](int64_t i0, int64_t i1) {
      constexpr int64_t kBlock = 1024;
      constexpr int L = 16 / sizeof(T);
      typedef T V __attribute__((vector_size(16)));
      alignas(64) T acc[kBlock];
      for (int64_t b0 = i0; b0 < i1; b0 += kBlock) {
        const int64_t m = std::min(kBlock, i1 - b0);
        std::memcpy(acc, terms[0] + b0, static_cast<std::size_t>(m) * sizeof(T));
        for (std::size_t t = 1; t < terms.size(); ++t) {
          const T* src = terms[t] + b0;
          int64_t i = 0;
          for (; i + L <= m; i += L) {
            V u, a;
            std::memcpy(&u, src + i, sizeof(V));
            std::memcpy(&a, acc + i, sizeof(V));
            a = a + u;
            std::memcpy(acc + i, &a, sizeof(V));
          }
          for (; i < m; ++i) acc[i] = acc[i] + src[i];
        }
        {
          int64_t i = 0;
          for (; i + L <= m; i += L) {
            V a;
            std::memcpy(&a, acc + i, sizeof(V));
            a = a * s;
            std::memcpy(acc + i, &a, sizeof(V));
          }
          for (; i < m; ++i) acc[i] = acc[i] * s;
        }
        // Plain stores: streaming ones into the peers' slots (which their optimizer reads
        // next) made ResNet-18's step 1-4 ms slower in an A/B on Zen 4.
        for (T* out : outs) std::memcpy(out + b0, acc, static_cast<std::size_t>(m) * sizeof(T));
      }
    });
  });
}

}  // namespace

void bind_distributed(py::module_& m) {
  using py::arg;
  m.def("_shm_fetch_add", &shm_fetch_add,
        "Atomically add delta to counters[index] (int64, possibly in memory shared between processes); returns "
        "the value before.",
        arg("counters"), arg("index"), arg("delta"));
  m.def("_shm_load", &shm_load, "counters[index], read atomically (acquire).", arg("counters"), arg("index"));
  m.def("_shm_store", &shm_store, "counters[index] = value, written atomically (release).", arg("counters"),
        arg("index"), arg("value"));
  m.def("_mean_into_slots", &mean_into_slots,
        "Write into every slot scale * the sum, in rank order, of own (for rank me, when given) and of the "
        "slots whose include flag is set.",
        arg("slots"), arg("include"), arg("own"), arg("me"), arg("scale"));
}

}  // namespace cnnfast::bind
