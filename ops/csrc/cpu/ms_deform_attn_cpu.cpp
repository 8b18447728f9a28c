// CPU kernels: the head_dim channels of a pixel are contiguous, so the inner loops run over them
// and vectorise; at::parallel_for splits the work so that no two threads write the same element.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../ms_deform_attn.h"

namespace vitsplit_msda {
namespace {

template <typename scalar_t, typename acc_t>
void forward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                    const acc_t* locations, const acc_t* weights, scalar_t* output,
                    const Sizes& s) {
  const int64_t dim = s.head_dim;
  const int64_t key_stride = s.num_heads * dim;  // elements between two keys of one head
  const int64_t points = s.num_levels * s.num_points;
  // One task per (batch, query, head): it owns its output row.
  at::parallel_for(0, s.batch * s.num_queries * s.num_heads, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(dim);
    for (int64_t bqh = begin; bqh < end; ++bqh) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      const int64_t head = bqh % s.num_heads;
      const int64_t batch = bqh / (s.num_heads * s.num_queries);
      const scalar_t* value_bh = value + batch * s.num_keys * key_stride + head * dim;
      const acc_t* loc = locations + bqh * points * 2;
      const acc_t* attn = weights + bqh * points;
      for (int64_t level = 0; level < s.num_levels; ++level) {
        const scalar_t* value_l = value_bh + starts[level] * key_stride;
        for (int64_t point = 0; point < s.num_points; ++point) {
          const int64_t i = level * s.num_points + point;
          Footprint<acc_t> f;
          if (!bilinear_footprint(loc[2 * i], loc[2 * i + 1], shapes[2 * level],
                                  shapes[2 * level + 1], f)) {
            continue;
          }
          for (int k = 0; k < 4; ++k) {
            if (!f.inside[k]) continue;
            const scalar_t* v = value_l + f.pixel[k] * key_stride;
            const acc_t w = attn[i] * f.weight[k];
#pragma omp simd
            for (int64_t c = 0; c < dim; ++c) acc[c] += w * static_cast<acc_t>(v[c]);
          }
        }
      }
      scalar_t* out = output + bqh * dim;
      for (int64_t c = 0; c < dim; ++c) out[c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                     const acc_t* locations, const acc_t* weights, const scalar_t* grad_output,
                     acc_t* grad_value, acc_t* grad_locations, acc_t* grad_weights,
                     const Sizes& s) {
  const int64_t dim = s.head_dim;
  const int64_t key_stride = s.num_heads * dim;
  const int64_t points = s.num_levels * s.num_points;
  // One task per (batch, head): it owns grad_value[batch, :, head, :], which every query of
  // that pair scatters into, and the location/weight gradients of those queries.
  at::parallel_for(0, s.batch * s.num_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> go(dim);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t batch = bh / s.num_heads;
      const int64_t head = bh % s.num_heads;
      const int64_t offset_bh = batch * s.num_keys * key_stride + head * dim;
      for (int64_t query = 0; query < s.num_queries; ++query) {
        const int64_t bqh = (batch * s.num_queries + query) * s.num_heads + head;
        const scalar_t* go_row = grad_output + bqh * dim;
        for (int64_t c = 0; c < dim; ++c) go[c] = static_cast<acc_t>(go_row[c]);
        const acc_t* loc = locations + bqh * points * 2;
        const acc_t* attn = weights + bqh * points;
        for (int64_t level = 0; level < s.num_levels; ++level) {
          const int64_t height = shapes[2 * level];
          const int64_t width = shapes[2 * level + 1];
          const int64_t offset_l = offset_bh + starts[level] * key_stride;
          for (int64_t point = 0; point < s.num_points; ++point) {
            const int64_t i = level * s.num_points + point;
            Footprint<acc_t> f;
            if (!bilinear_footprint(loc[2 * i], loc[2 * i + 1], height, width, f)) continue;
            // dot[k] = <grad_output row, value of pixel k>: every gradient is linear in it.
            acc_t dot[4] = {0, 0, 0, 0};
            for (int k = 0; k < 4; ++k) {
              if (!f.inside[k]) continue;
              const scalar_t* v = value + offset_l + f.pixel[k] * key_stride;
              acc_t* gv = grad_value + offset_l + f.pixel[k] * key_stride;
              const acc_t w = attn[i] * f.weight[k];
              acc_t d = 0;
#pragma omp simd reduction(+ : d)
              for (int64_t c = 0; c < dim; ++c) {
                d += go[c] * static_cast<acc_t>(v[c]);
                gv[c] += w * go[c];
              }
              dot[k] = d;
            }
            grad_weights[bqh * points + i] = f.weight[0] * dot[0] + f.weight[1] * dot[1] +
                                             f.weight[2] * dot[2] + f.weight[3] * dot[3];
            grad_locations[(bqh * points + i) * 2] =
                attn[i] * static_cast<acc_t>(width) * sample_grad_x(f, dot);
            grad_locations[(bqh * points + i) * 2 + 1] =
                attn[i] * static_cast<acc_t>(height) * sample_grad_y(f, dot);
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                       const at::Tensor& attention_weights) {
  const Sizes s = sizes_of(value, sampling_locations);
  auto output = at::empty({s.batch, s.num_queries, s.num_heads * s.head_dim}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<acc_t>(),
        attention_weights.const_data_ptr<acc_t>(), output.mutable_data_ptr<scalar_t>(), s);
  });
  return output;
}

std::vector<at::Tensor> backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index,
                                     const at::Tensor& sampling_locations,
                                     const at::Tensor& attention_weights,
                                     const at::Tensor& grad_output) {
  const Sizes s = sizes_of(value, sampling_locations);
  // Accumulate in float for half/bfloat16 values; the cast back happens once at the end.
  auto grad_value = at::zeros(value.sizes(), sampling_locations.options());
  auto grad_locations = at::zeros_like(sampling_locations);
  auto grad_weights = at::zeros_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t, acc_t>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<acc_t>(),
        attention_weights.const_data_ptr<acc_t>(), grad_output.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<acc_t>(), grad_locations.mutable_data_ptr<acc_t>(),
        grad_weights.mutable_data_ptr<acc_t>(), s);
  });
  return {grad_value.to(value.scalar_type()), grad_locations, grad_weights};
}

}  // namespace vitsplit_msda
