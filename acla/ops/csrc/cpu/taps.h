// Shared by the CPU kernels: the bilinear taps of a query's keys, the keys' fixed grid, and the dispatch on
// the channel count. Everything here has internal linkage (an unnamed namespace), as when the kernels were one
// translation unit: each kernel file gets its own copy, and the compiler inlines them as it did then.
#pragma once

#include <ATen/Parallel.h>
#include <torch/all.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

// The four bilinear taps (y0 x0, y0 x1, y1 x0, y1 x1) of a query's M keys, in one pass that vectorises over the keys
// (computed key by key, this scalar work cost more than the gather itself): key m sits at (x + grid_x[m] +
// offsets[2m], y + grid_y[m] + offsets[2m+1]). Tap t of key m is entry t*M + m: its pixel y*W + x in the map, or -1
// outside the map; its weight (0 outside) and the weight's derivatives along x and y (0 outside).
template <typename scalar_t>
struct KeyTaps {
  std::vector<int32_t> pixel;
  std::vector<scalar_t> weight, along_x, along_y;

  explicit KeyTaps(int64_t count) : pixel(4 * count), weight(4 * count), along_x(4 * count), along_y(4 * count) {}

  // DERIVATIVES: also the weights' derivatives along x and y (only the backward kernels read them)
  template <bool DERIVATIVES>
  void compute(const scalar_t* __restrict__ offsets, const scalar_t* __restrict__ grid_x,
               const scalar_t* __restrict__ grid_y, scalar_t x, scalar_t y, int64_t height, int64_t width,
               int64_t count) {
    const int32_t h = static_cast<int32_t>(height), w = static_cast<int32_t>(width);
    int32_t* __restrict__ pixels = pixel.data();
    scalar_t* __restrict__ weights = weight.data(), * __restrict__ dx = along_x.data(), * __restrict__ dy = along_y.data();
#pragma omp simd
    for (int64_t m = 0; m < count; ++m) {
      const scalar_t px = (x + grid_x[m]) + offsets[2 * m], py = (y + grid_y[m]) + offsets[2 * m + 1];
      // floor by conversion (std::floor does not vectorise), after clamping to just outside the map: far positions
      // and NaN land outside, where every weight is 0
      const scalar_t lx = px > scalar_t(-2) ? px : scalar_t(-2), ly = py > scalar_t(-2) ? py : scalar_t(-2);
      const scalar_t cx = lx < scalar_t(w + 1) ? lx : scalar_t(w + 1), cy = ly < scalar_t(h + 1) ? ly : scalar_t(h + 1);
      const int32_t tx = static_cast<int32_t>(cx), ty = static_cast<int32_t>(cy);  // toward zero
      const int32_t ix = tx - (cx < scalar_t(tx)), iy = ty - (cy < scalar_t(ty));
      const scalar_t fx = px - scalar_t(ix), fy = py - scalar_t(iy);
      const bool in_x0 = (ix >= 0) & (ix <= w - 1), in_x1 = (ix >= -1) & (ix <= w - 2);
      const bool in_y0 = (iy >= 0) & (iy <= h - 1), in_y1 = (iy >= -1) & (iy <= h - 2);
      const scalar_t one = 1, zero = 0;
      const scalar_t wx0 = in_x0 ? 1 - fx : zero, wx1 = in_x1 ? fx : zero;
      const scalar_t wy0 = in_y0 ? 1 - fy : zero, wy1 = in_y1 ? fy : zero;
      const int32_t top = iy * w + ix;
      pixels[m] = in_y0 & in_x0 ? top : -1;
      pixels[count + m] = in_y0 & in_x1 ? top + 1 : -1;
      pixels[2 * count + m] = in_y1 & in_x0 ? top + w : -1;
      pixels[3 * count + m] = in_y1 & in_x1 ? top + w + 1 : -1;
      weights[m] = wy0 * wx0;
      weights[count + m] = wy0 * wx1;
      weights[2 * count + m] = wy1 * wx0;
      weights[3 * count + m] = wy1 * wx1;
      if constexpr (DERIVATIVES) {
        const scalar_t sx0 = in_x0 ? -one : zero, sx1 = in_x1 ? one : zero;
        const scalar_t sy0 = in_y0 ? -one : zero, sy1 = in_y1 ? one : zero;
        dx[m] = wy0 * sx0;
        dx[count + m] = wy0 * sx1;
        dx[2 * count + m] = wy1 * sx0;
        dx[3 * count + m] = wy1 * sx1;
        dy[m] = sy0 * wx0;
        dy[count + m] = sy0 * wx1;
        dy[2 * count + m] = sy1 * wx0;
        dy[3 * count + m] = sy1 * wx1;
      }
    }
  }
};

// Key m's fixed offset p_k (k = m % K) along one axis (0: x, 1: y), for the M = R*K keys of a query as ``KeyTaps``
// reads them. grid: (K, 2).
template <typename scalar_t>
std::vector<scalar_t> grid_column(const scalar_t* grid, int64_t keys, int64_t per_query, int axis) {
  std::vector<scalar_t> column(per_query);
  for (int64_t m = 0; m < per_query; ++m) column[m] = grid[2 * (m % keys) + axis];
  return column;
}

// Calls ``kernel<FIXED_CHANNELS>`` for the common channel counts, the generic loop otherwise.
#define ACLA_DISPATCH_CHANNELS(channels, kernel, ...) \
  switch (channels) {                                 \
    case 16:                                          \
      kernel<scalar_t, 16>(__VA_ARGS__);              \
      break;                                          \
    case 32:                                          \
      kernel<scalar_t, 32>(__VA_ARGS__);              \
      break;                                          \
    case 64:                                          \
      kernel<scalar_t, 64>(__VA_ARGS__);              \
      break;                                          \
    default:                                          \
      kernel<scalar_t, 0>(__VA_ARGS__);               \
  }

template <typename scalar_t>
std::vector<const scalar_t*> pointers(const std::vector<torch::Tensor>& maps) {
  std::vector<const scalar_t*> out;
  for (const auto& map : maps) out.push_back(map.data_ptr<scalar_t>());
  return out;
}

}  // namespace
