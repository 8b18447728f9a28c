// Python bindings of vitsplit_msda_ext: argument checks and the choice of device. The Python
// side (mmseg_custom.ops) wraps these in an autograd.Function.
#include <ATen/OpMathType.h>
#include <torch/extension.h>

#include "ms_deform_attn.h"

namespace vitsplit_msda {
namespace {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                  const at::Tensor& attention_weights) {
  const auto device = value.device();
  for (const at::Tensor* t : {&value, &spatial_shapes, &level_start_index, &sampling_locations,
                              &attention_weights}) {
    TORCH_CHECK(t->device() == device, "vitsplit_msda_ext: all tensors must be on ", device);
    TORCH_CHECK(t->is_contiguous(), "vitsplit_msda_ext: tensors must be contiguous");
  }
  TORCH_CHECK(value.dim() == 4, "value must be (batch, num_keys, num_heads, head_dim)");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be (batch, num_queries, num_heads, num_levels, "
              "num_points, 2)");
  const auto batch = value.size(0), heads = value.size(2);
  const auto queries = sampling_locations.size(1), levels = sampling_locations.size(3),
             points = sampling_locations.size(4);
  TORCH_CHECK(sampling_locations.size(0) == batch && sampling_locations.size(2) == heads,
              "sampling_locations do not match value's batch and heads");
  TORCH_CHECK(attention_weights.sizes() == at::IntArrayRef({batch, queries, heads, levels, points}),
              "attention_weights must be (batch, num_queries, num_heads, num_levels, num_points)");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == levels &&
                  spatial_shapes.size(1) == 2 && level_start_index.numel() == levels,
              "spatial_shapes must be (num_levels, 2) and level_start_index (num_levels,)");
  // The kernels index value with these, so inconsistent ones would read out of bounds.
  if (levels > 0) {
    const auto level_sizes = spatial_shapes.prod(1);
    TORCH_CHECK(spatial_shapes.min().item<int64_t>() > 0, "spatial_shapes must be positive");
    TORCH_CHECK(level_sizes.sum().item<int64_t>() == value.size(1),
                "value has ", value.size(1), " keys but spatial_shapes cover ",
                level_sizes.sum().item<int64_t>());
    TORCH_CHECK(at::equal(level_start_index, level_sizes.cumsum(0) - level_sizes),
                "level_start_index must be [0, H0 * W0, H0 * W0 + H1 * W1, ...]");
  }
  // Locations and weights are read in the accumulation type: half precision would misplace
  // samples on large maps.
  const auto acc = at::toOpMathType(value.scalar_type());
  TORCH_CHECK(sampling_locations.scalar_type() == acc && attention_weights.scalar_type() == acc,
              "sampling_locations and attention_weights must be ", acc, " for ",
              value.scalar_type(), " values");
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                   const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                   const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return forward_cuda(value, spatial_shapes, level_start_index, sampling_locations,
                        attention_weights);
#else
    TORCH_CHECK(false, "vitsplit_msda_ext was built without CUDA kernels");
#endif
  }
  TORCH_CHECK(value.is_cpu(), "vitsplit_msda_ext: unsupported device ", value.device());
  return forward_cpu(value, spatial_shapes, level_start_index, sampling_locations,
                     attention_weights);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index,
                                 const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights,
                                 const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(grad_output.device() == value.device() && grad_output.is_contiguous() &&
                  grad_output.scalar_type() == value.scalar_type(),
              "grad_output must be contiguous, on value's device and of value's dtype");
  TORCH_CHECK(grad_output.numel() ==
                  sampling_locations.size(1) * value.size(0) * value.size(2) * value.size(3),
              "grad_output must be (batch, num_queries, num_heads * head_dim)");
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return backward_cuda(value, spatial_shapes, level_start_index, sampling_locations,
                         attention_weights, grad_output);
#else
    TORCH_CHECK(false, "vitsplit_msda_ext was built without CUDA kernels");
#endif
  }
  TORCH_CHECK(value.is_cpu(), "vitsplit_msda_ext: unsupported device ", value.device());
  return backward_cpu(value, spatial_shapes, level_start_index, sampling_locations,
                      attention_weights, grad_output);
}

}  // namespace
}  // namespace vitsplit_msda

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention kernels for mmseg_custom.ops";
  m.def("forward", &vitsplit_msda::forward,
        "(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) "
        "-> output");
  m.def("backward", &vitsplit_msda::backward,
        "(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, "
        "grad_output) -> [grad_value, grad_sampling_locations, grad_attention_weights]");
  m.def("with_cuda", &vitsplit_msda::with_cuda, "Whether the CUDA kernels were built");
}
