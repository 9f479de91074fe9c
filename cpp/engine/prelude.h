// Everything the engine includes from outside, included by each ISA's translation unit before
// its `#pragma GCC target`: library code must stay compiled at the baseline ISA, so that no
// AVX instruction can reach a function that the portable path shares.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../asymmetric.h"
#include "../centres.h"
#include "../codes.h"
#include "../cpu.h"
#include "../half.h"
#include "../snapshot.h"
#include "../thread_pool.h"
#include "../topk.h"
