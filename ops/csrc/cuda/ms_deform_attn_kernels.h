// Launchers of the CUDA kernels in ms_deform_attn_kernels.cu, on raw pointers so that the .cu
// file needs no ATen headers. Instantiated for (scalar_t, acc_t) = (float, float), (double, double),
// (c10::Half, float) and (c10::BFloat16, float). Each returns the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include "../ms_deform_attn_common.h"

namespace vitsplit_msda {

template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t* value, const int64_t* spatial_shapes,
                           const int64_t* level_start_index, const acc_t* sampling_locations,
                           const acc_t* attention_weights, scalar_t* output, const Sizes& sizes,
                           cudaStream_t stream);

// grad_value, grad_sampling_locations and grad_attention_weights must be zero-filled: the
// kernel adds into them.
template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t* value, const int64_t* spatial_shapes,
                            const int64_t* level_start_index, const acc_t* sampling_locations,
                            const acc_t* attention_weights, const scalar_t* grad_output,
                            acc_t* grad_value, acc_t* grad_sampling_locations,
                            acc_t* grad_attention_weights, const Sizes& sizes,
                            cudaStream_t stream);

}  // namespace vitsplit_msda
