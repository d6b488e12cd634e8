// The bilinear gather on CPU: per query, one vectorised pass computes the four taps of all its keys; the forward
// sums the weighted rows, the backward scatters the maps' gradient and takes the dot products that give the
// positions' and the attention weights' gradients. Queries of one image read only that image's rows, so the
// backward runs one image per thread without atomics.
#include "../ops.h"
#include "taps.h"

namespace {

// maps[r]: reference r as rows (B*H*W, C); positions (B, H, W, R, K, 2); weights (B, H, W, R, K) or null
// (one bag per key, weight 1). FIXED_CHANNELS > 0: C known at compile time (unrolled loops); 0: ``channels``.
template <typename scalar_t, int FIXED_CHANNELS>
void forward_kernel(const std::vector<const scalar_t*>& maps, const scalar_t* positions, const scalar_t* weights,
                    scalar_t* __restrict__ out, int64_t batch, int64_t height, int64_t width, int64_t keys,
                    int64_t runtime_channels) {
  const int64_t channels = FIXED_CHANNELS > 0 ? FIXED_CHANNELS : runtime_channels;
  const int64_t pixels = height * width, refs = maps.size(), per_query = refs * keys;
  const std::vector<scalar_t> origin(per_query, scalar_t(0));  // the positions are absolute
  at::parallel_for(0, batch * pixels, 64, [&](int64_t begin, int64_t end) {
    KeyTaps<scalar_t> taps(per_query);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t image = (q / pixels) * pixels;  // first row of this image in every map
      taps.template compute<false>(positions + 2 * q * per_query, origin.data(), origin.data(), 0, 0, height, width,
                                   per_query);
      // the query's weighted sum: in a local row (registers) when the channel count is fixed
      scalar_t local[FIXED_CHANNELS > 0 ? FIXED_CHANNELS : 1] = {};
      scalar_t* sum = weights ? (FIXED_CHANNELS > 0 ? local : out + q * channels) : nullptr;
      for (int64_t m = 0, r = 0; r < refs; ++r)
        for (int64_t k = 0; k < keys; ++k, ++m) {
          const int64_t key = q * per_query + m;
          const scalar_t attention = weights ? weights[key] : scalar_t(1);
          if (attention == 0) continue;  // a closed key (ACLA's gates) reads nothing
          scalar_t* __restrict__ target = weights ? sum : out + key * channels;
          for (int t = 0; t < 4; ++t) {
            const int32_t pixel = taps.pixel[t * per_query + m];
            if (pixel < 0) continue;
            const scalar_t coefficient = attention * taps.weight[t * per_query + m];
            const scalar_t* __restrict__ source = maps[r] + (image + pixel) * channels;
#pragma omp simd
            for (int64_t c = 0; c < channels; ++c) target[c] += coefficient * source[c];
          }
        }
      if (FIXED_CHANNELS > 0 && weights) std::copy(local, local + channels, out + q * channels);
    }
  });
}

template <typename scalar_t, int FIXED_CHANNELS>
void backward_kernel(const std::vector<const scalar_t*>& maps, const scalar_t* positions, const scalar_t* weights,
                     const scalar_t* __restrict__ grad, const std::vector<scalar_t*>& grad_maps,
                     scalar_t* grad_positions, scalar_t* grad_weights, int64_t batch, int64_t height, int64_t width,
                     int64_t keys, int64_t runtime_channels) {
  const int64_t channels = FIXED_CHANNELS > 0 ? FIXED_CHANNELS : runtime_channels;
  const int64_t pixels = height * width, refs = maps.size(), per_query = refs * keys;
  const bool need_maps = !grad_maps.empty();
  const std::vector<scalar_t> origin(per_query, scalar_t(0));      // the positions are absolute
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {  // an image's taps stay in its own rows
    KeyTaps<scalar_t> taps(per_query);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t q = b * pixels; q < (b + 1) * pixels; ++q) {
        taps.template compute<true>(positions + 2 * q * per_query, origin.data(), origin.data(), 0, 0, height, width,
                                    per_query);
        for (int64_t m = 0, r = 0; r < refs; ++r)
          for (int64_t k = 0; k < keys; ++k, ++m) {
            const int64_t key = q * per_query + m;
            const scalar_t attention = weights ? weights[key] : scalar_t(1);
            const scalar_t* __restrict__ upstream = grad + (weights ? q : key) * channels;
            scalar_t d_weight = 0, d_x = 0, d_y = 0;
            for (int t = 0; t < 4; ++t) {
              const int32_t pixel = taps.pixel[t * per_query + m];
              if (pixel < 0) continue;
              const int64_t row = (b * pixels + pixel) * channels;
              if (grad_positions || grad_weights) {
                const scalar_t* __restrict__ source = maps[r] + row;
                scalar_t dot = 0;  // u_t = <grad, V[row_t]>
#pragma omp simd reduction(+ : dot)
                for (int64_t c = 0; c < channels; ++c) dot += upstream[c] * source[c];
                d_weight += dot * taps.weight[t * per_query + m];
                d_x += dot * taps.along_x[t * per_query + m];
                d_y += dot * taps.along_y[t * per_query + m];
              }
              if (need_maps && attention != 0) {
                const scalar_t coefficient = attention * taps.weight[t * per_query + m];
                scalar_t* __restrict__ target = grad_maps[r] + row;
#pragma omp simd
                for (int64_t c = 0; c < channels; ++c) target[c] += coefficient * upstream[c];
              }
            }
            if (grad_weights) grad_weights[key] = d_weight;
            if (grad_positions) {
              grad_positions[2 * key] = attention * d_x;
              grad_positions[2 * key + 1] = attention * d_y;
            }
          }
      }
    }
  });
}

}  // namespace

// maps: R tensors (B, H, W, C) contiguous, one per reference; positions (B, H, W, R, K, 2); weights
// (B, H, W, R, K), or empty for one sample per key. Returns (B, H, W, C) or (B, H, W, R, K, C).
torch::Tensor gather_forward(std::vector<torch::Tensor> maps, torch::Tensor positions, torch::Tensor weights) {
  const int64_t batch = positions.size(0), height = positions.size(1), width = positions.size(2);
  const int64_t refs = positions.size(3), keys = positions.size(4), channels = maps[0].size(-1);
  const bool bags = weights.numel() > 0;
  auto out = bags ? torch::zeros({batch, height, width, channels}, maps[0].options())
                  : torch::zeros({batch, height, width, refs, keys, channels}, maps[0].options());
  AT_DISPATCH_FLOATING_TYPES(maps[0].scalar_type(), "acla_gather_forward", [&] {
    ACLA_DISPATCH_CHANNELS(channels, forward_kernel, pointers<scalar_t>(maps), positions.data_ptr<scalar_t>(),
                           bags ? weights.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), batch, height,
                           width, keys, channels);
  });
  return out;
}

// Gradients for the maps (a list, empty when not needed), the positions and the weights.
std::vector<torch::Tensor> gather_backward(std::vector<torch::Tensor> maps, torch::Tensor positions,
                                           torch::Tensor weights, torch::Tensor grad, bool need_maps,
                                           bool need_positions, bool need_weights) {
  const int64_t batch = positions.size(0), height = positions.size(1), width = positions.size(2);
  const int64_t keys = positions.size(4), channels = maps[0].size(-1);
  const bool bags = weights.numel() > 0;
  std::vector<torch::Tensor> grads;
  if (need_maps)
    for (const auto& map : maps) grads.push_back(torch::zeros_like(map));
  auto grad_positions = need_positions ? torch::empty_like(positions) : torch::Tensor();
  auto grad_weights = need_weights && bags ? torch::empty_like(weights) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(maps[0].scalar_type(), "acla_gather_backward", [&] {
    std::vector<scalar_t*> grad_pointers;
    for (auto& tensor : grads) grad_pointers.push_back(tensor.data_ptr<scalar_t>());
    ACLA_DISPATCH_CHANNELS(channels, backward_kernel, pointers<scalar_t>(maps), positions.data_ptr<scalar_t>(),
                           bags ? weights.data_ptr<scalar_t>() : nullptr, grad.data_ptr<scalar_t>(), grad_pointers,
                           need_positions ? grad_positions.data_ptr<scalar_t>() : nullptr,
                           need_weights && bags ? grad_weights.data_ptr<scalar_t>() : nullptr, batch, height, width,
                           keys, channels);
  });
  grads.push_back(grad_positions);
  grads.push_back(grad_weights);
  return grads;
}
