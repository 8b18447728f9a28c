// CUDA kernels: one thread per output element (batch, query, head, channel). Channels are the
// fastest index, so the threads of a warp read neighbouring channels of the same pixel.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "ms_deform_attn_kernels.h"

namespace vitsplit_msda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

int64_t num_blocks(int64_t total) { return (total + kThreads - 1) / kThreads; }

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const acc_t* __restrict__ locations,
                               const acc_t* __restrict__ weights, scalar_t* __restrict__ output,
                               Sizes s, int64_t total) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t channel = idx % s.head_dim;
  const int64_t bqh = idx / s.head_dim;
  const int64_t head = bqh % s.num_heads;
  const int64_t batch = bqh / (s.num_heads * s.num_queries);
  const int64_t key_stride = s.num_heads * s.head_dim;
  const int64_t points = s.num_levels * s.num_points;
  const scalar_t* value_bhc = value + batch * s.num_keys * key_stride + head * s.head_dim + channel;
  const acc_t* loc = locations + bqh * points * 2;
  const acc_t* attn = weights + bqh * points;

  acc_t acc = 0;
  for (int64_t level = 0; level < s.num_levels; ++level) {
    const scalar_t* value_l = value_bhc + starts[level] * key_stride;
    for (int64_t point = 0; point < s.num_points; ++point) {
      const int64_t i = level * s.num_points + point;
      Footprint<acc_t> f;
      if (!bilinear_footprint(loc[2 * i], loc[2 * i + 1], shapes[2 * level],
                              shapes[2 * level + 1], f)) {
        continue;
      }
      acc_t sample = 0;
      for (int k = 0; k < 4; ++k) {
        if (f.inside[k]) {
          sample += f.weight[k] * static_cast<acc_t>(value_l[f.pixel[k] * key_stride]);
        }
      }
      acc += attn[i] * sample;
    }
  }
  output[idx] = static_cast<scalar_t>(acc);
}

// Sums v over aligned groups of `group` lanes (a power of two <= 32); every lane of a group gets
// the group's sum. All 32 lanes of the warp must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t v, int group) {
  for (int offset = group / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// The location and weight gradients of a (batch, query, head, level, point) sum over head_dim
// channels, i.e. over head_dim neighbouring threads: they are reduced with warp shuffles over
// groups of `group` lanes, and one lane per group adds the partial sum to global memory.
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts,
                                const acc_t* __restrict__ locations,
                                const acc_t* __restrict__ weights,
                                const scalar_t* __restrict__ grad_output,
                                acc_t* __restrict__ grad_value, acc_t* __restrict__ grad_locations,
                                acc_t* __restrict__ grad_weights, Sizes s, int64_t total,
                                int group) {
  // Threads past the end take part in the shuffles with a zero gradient, so no early return.
  const int64_t raw = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = raw < total;
  const int64_t idx = active ? raw : total - 1;
  const bool leader = active && (threadIdx.x % group) == 0;
  const int64_t channel = idx % s.head_dim;
  const int64_t bqh = idx / s.head_dim;
  const int64_t head = bqh % s.num_heads;
  const int64_t batch = bqh / (s.num_heads * s.num_queries);
  const int64_t key_stride = s.num_heads * s.head_dim;
  const int64_t points = s.num_levels * s.num_points;
  const int64_t offset_bhc = batch * s.num_keys * key_stride + head * s.head_dim + channel;
  const acc_t* loc = locations + bqh * points * 2;
  const acc_t* attn = weights + bqh * points;
  const acc_t go = active ? static_cast<acc_t>(grad_output[idx]) : acc_t(0);

  for (int64_t level = 0; level < s.num_levels; ++level) {
    const int64_t height = shapes[2 * level];
    const int64_t width = shapes[2 * level + 1];
    const int64_t offset_l = offset_bhc + starts[level] * key_stride;
    for (int64_t point = 0; point < s.num_points; ++point) {
      const int64_t i = level * s.num_points + point;
      Footprint<acc_t> f;
      acc_t grad_w = 0, grad_x = 0, grad_y = 0;
      if (bilinear_footprint(loc[2 * i], loc[2 * i + 1], height, width, f)) {
        acc_t v[4];
        for (int k = 0; k < 4; ++k) {
          v[k] = f.inside[k] ? static_cast<acc_t>(value[offset_l + f.pixel[k] * key_stride])
                             : acc_t(0);
          if (f.inside[k] && active) {
            atomicAdd(grad_value + offset_l + f.pixel[k] * key_stride, attn[i] * f.weight[k] * go);
          }
        }
        grad_w = go * (f.weight[0] * v[0] + f.weight[1] * v[1] + f.weight[2] * v[2] +
                       f.weight[3] * v[3]);
        grad_x = go * attn[i] * static_cast<acc_t>(width) * sample_grad_x(f, v);
        grad_y = go * attn[i] * static_cast<acc_t>(height) * sample_grad_y(f, v);
      }
      grad_w = group_sum(grad_w, group);
      grad_x = group_sum(grad_x, group);
      grad_y = group_sum(grad_y, group);
      if (leader) {
        atomicAdd(grad_weights + bqh * points + i, grad_w);
        atomicAdd(grad_locations + (bqh * points + i) * 2, grad_x);
        atomicAdd(grad_locations + (bqh * points + i) * 2 + 1, grad_y);
      }
    }
  }
}

// Lanes that share a (batch, query, head) and can be reduced together: all head_dim of them
// when head_dim divides the warp, a whole warp when the warp divides head_dim, else one lane.
int reduction_group(int64_t head_dim) {
  if (head_dim <= kWarp && kWarp % head_dim == 0) return static_cast<int>(head_dim);
  if (head_dim % kWarp == 0) return kWarp;
  return 1;
}

}  // namespace

template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t* value, const int64_t* spatial_shapes,
                           const int64_t* level_start_index, const acc_t* sampling_locations,
                           const acc_t* attention_weights, scalar_t* output, const Sizes& sizes,
                           cudaStream_t stream) {
  const int64_t total = sizes.batch * sizes.num_queries * sizes.num_heads * sizes.head_dim;
  if (total == 0) return cudaSuccess;
  forward_kernel<scalar_t, acc_t><<<num_blocks(total), kThreads, 0, stream>>>(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output,
      sizes, total);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t* value, const int64_t* spatial_shapes,
                            const int64_t* level_start_index, const acc_t* sampling_locations,
                            const acc_t* attention_weights, const scalar_t* grad_output,
                            acc_t* grad_value, acc_t* grad_sampling_locations,
                            acc_t* grad_attention_weights, const Sizes& sizes,
                            cudaStream_t stream) {
  const int64_t total = sizes.batch * sizes.num_queries * sizes.num_heads * sizes.head_dim;
  if (total == 0) return cudaSuccess;
  backward_kernel<scalar_t, acc_t><<<num_blocks(total), kThreads, 0, stream>>>(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
      grad_output, grad_value, grad_sampling_locations, grad_attention_weights, sizes, total,
      reduction_group(sizes.head_dim));
  return cudaGetLastError();
}

#define MSDA_INSTANTIATE(scalar_t, acc_t)                                                     \
  template cudaError_t launch_forward<scalar_t, acc_t>(                                      \
      const scalar_t*, const int64_t*, const int64_t*, const acc_t*, const acc_t*, scalar_t*, \
      const Sizes&, cudaStream_t);                                                           \
  template cudaError_t launch_backward<scalar_t, acc_t>(                                     \
      const scalar_t*, const int64_t*, const int64_t*, const acc_t*, const acc_t*,           \
      const scalar_t*, acc_t*, acc_t*, acc_t*, const Sizes&, cudaStream_t);

MSDA_INSTANTIATE(float, float)
MSDA_INSTANTIATE(double, double)
MSDA_INSTANTIATE(c10::Half, float)
MSDA_INSTANTIATE(c10::BFloat16, float)

#undef MSDA_INSTANTIATE

}  // namespace vitsplit_msda
