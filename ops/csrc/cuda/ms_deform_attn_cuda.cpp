// Tensor-level CUDA entry points: allocate, pick the kernel's types, launch on the current stream.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../ms_deform_attn.h"
#include "ms_deform_attn_kernels.h"

namespace vitsplit_msda {
namespace {

void check_launch(cudaError_t status) {
  TORCH_CHECK(status == cudaSuccess, "vitsplit_msda_ext: CUDA kernel launch failed: ",
              cudaGetErrorString(status));
}

}  // namespace

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Sizes s = sizes_of(value, sampling_locations);
  auto output = at::empty({s.batch, s.num_queries, s.num_heads * s.head_dim}, value.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    check_launch(launch_forward<scalar_t, acc_t>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<acc_t>(),
        attention_weights.const_data_ptr<acc_t>(), output.mutable_data_ptr<scalar_t>(), s,
        stream));
  });
  return output;
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights,
                                      const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Sizes s = sizes_of(value, sampling_locations);
  // Atomic adds go to float buffers for half/bfloat16 values; the cast back happens once.
  auto grad_value = at::zeros(value.sizes(), sampling_locations.options());
  auto grad_locations = at::zeros_like(sampling_locations);
  auto grad_weights = at::zeros_like(attention_weights);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    check_launch(launch_backward<scalar_t, acc_t>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<acc_t>(),
        attention_weights.const_data_ptr<acc_t>(), grad_output.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<acc_t>(), grad_locations.mutable_data_ptr<acc_t>(),
        grad_weights.mutable_data_ptr<acc_t>(), s, stream));
  });
  return {grad_value.to(value.scalar_type()), grad_locations, grad_weights};
}

}  // namespace vitsplit_msda
