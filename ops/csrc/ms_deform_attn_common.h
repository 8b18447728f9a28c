// Shared by the CPU and CUDA kernels: sizes of one call and the bilinear footprint of one
// sampling point. Plain C++ (no ATen) so that nvcc compiles it quickly.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define MSDA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MSDA_HOST_DEVICE inline
#endif

namespace vitsplit_msda {

// Sizes of one call. Tensors are contiguous:
//   value              (batch, num_keys, num_heads, head_dim)
//   sampling_locations (batch, num_queries, num_heads, num_levels, num_points, 2)
//   attention_weights  (batch, num_queries, num_heads, num_levels, num_points)
//   output             (batch, num_queries, num_heads * head_dim)
struct Sizes {
  int64_t batch;
  int64_t num_keys;
  int64_t num_heads;
  int64_t head_dim;
  int64_t num_queries;
  int64_t num_levels;
  int64_t num_points;
};

// The (up to) four pixels a bilinear sample reads, in the order (y0, x0), (y0, x1), (y1, x0),
// (y1, x1). Pixels outside the map have inside = false and weight 0: grid_sample's zero padding.
template <typename acc_t>
struct Footprint {
  int64_t pixel[4];  // y * width + x, relative to the level's first key
  acc_t weight[4];   // bilinear weight of each pixel
  bool inside[4];
  acc_t fx, fy;      // fractional position between x0 and x1 (y0 and y1)
};

MSDA_HOST_DEVICE float floor_of(float v) { return floorf(v); }
MSDA_HOST_DEVICE double floor_of(double v) { return floor(v); }

// Fills f for a sampling location (x, y) in [0, 1] on a height x width map and returns whether
// the sample touches the map at all. Pixel centres sit at (i + 0.5) / size (align_corners=False).
template <typename acc_t>
MSDA_HOST_DEVICE bool bilinear_footprint(acc_t loc_x, acc_t loc_y, int64_t height, int64_t width,
                                         Footprint<acc_t>& f) {
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  // Written so that NaN locations count as outside.
  if (!(x > acc_t(-1) && y > acc_t(-1) && x < static_cast<acc_t>(width) &&
        y < static_cast<acc_t>(height))) {
    return false;
  }
  const acc_t x0f = floor_of(x);
  const acc_t y0f = floor_of(y);
  const int64_t x0 = static_cast<int64_t>(x0f);
  const int64_t y0 = static_cast<int64_t>(y0f);
  f.fx = x - x0f;
  f.fy = y - y0f;
  const acc_t wx[2] = {acc_t(1) - f.fx, f.fx};
  const acc_t wy[2] = {acc_t(1) - f.fy, f.fy};
  for (int k = 0; k < 4; ++k) {
    const int64_t px = x0 + (k & 1);
    const int64_t py = y0 + (k >> 1);
    f.inside[k] = px >= 0 && px < width && py >= 0 && py < height;
    f.pixel[k] = f.inside[k] ? py * width + px : 0;
    f.weight[k] = f.inside[k] ? wy[k >> 1] * wx[k & 1] : acc_t(0);
  }
  return true;
}

// d(sample)/dx and d(sample)/dy in pixel units, given the values v[k] of the footprint's pixels
// (0 outside the map).
template <typename acc_t>
MSDA_HOST_DEVICE acc_t sample_grad_x(const Footprint<acc_t>& f, const acc_t v[4]) {
  return (acc_t(1) - f.fy) * (v[1] - v[0]) + f.fy * (v[3] - v[2]);
}

template <typename acc_t>
MSDA_HOST_DEVICE acc_t sample_grad_y(const Footprint<acc_t>& f, const acc_t v[4]) {
  return (acc_t(1) - f.fx) * (v[2] - v[0]) + f.fx * (v[3] - v[1]);
}

}  // namespace vitsplit_msda
