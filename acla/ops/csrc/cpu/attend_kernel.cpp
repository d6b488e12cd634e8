// CLA and ACLA with predicted logits on CPU, (S1)-(S7) of docs/method.md in one walk per query: the gates,
// the softmax over the open keys and the bilinear sum of the open keys only, forward and backward; and ACLA's
// inference walk, which projects the open keys' offsets and logits alone.
#include "../ops.h"
#include "taps.h"

namespace {

// The index of the first largest score: torch.argmax for scores without NaN (with NaN the two may differ).
template <typename scalar_t>
int64_t first_maximum(const scalar_t* scores, int64_t count) {
  scalar_t highest = scores[0];
#pragma omp simd reduction(max : highest)
  for (int64_t m = 1; m < count; ++m) highest = scores[m] > highest ? scores[m] : highest;
  for (int64_t m = 0; m < count; ++m)
    if (scores[m] == highest) return m;
  return 0;
}

// (S3)-(S7) for one query: the softmax weight of each of its M = R*K keys, from its logits and, with gates, its gate
// scores s. Gates: s > 0 at inference; in training the hard sample relaxed > 1/2 of the relaxed gate
// sigmoid((s + n) / tau) (computed by torch; ``gate_score_gradients`` gives its gradient). The best-scored key is
// always open. The softmax runs over the open keys only: a closed key weighs 0 and, at inference, costs no exp.
// Without gates (CLA) every key is open: the plain softmax (S4). With training gates a closed key's entry is minus the
// weight it would have if it opened, exp(min(e - top, 0)) / total, which is what the straight-through gradient needs
// (the backward reads the sign: open or closed). open_keys: the open keys' indices, in order; returns their count.
template <typename scalar_t>
int64_t key_weights(const scalar_t* logits, const scalar_t* scores, const scalar_t* relaxed, int64_t count,
                    scalar_t* weight, int32_t* open_keys) {
  const auto gate = [&](int64_t m) { return relaxed ? relaxed[m] > scalar_t(0.5) : (scores ? scores[m] > 0 : true); };
  int64_t open = 0;
  for (int64_t m = 0; m < count; ++m) {  // no branch on the gate: half-open gates would mispredict every other key
    open_keys[open] = static_cast<int32_t>(m);
    open += gate(m);
  }
  // (S7) the best-scored key opens too. At inference it already is open whenever any key is (its s is the largest,
  // so > 0), so only a query with every gate shut, or a training query, looks for it.
  int64_t best = -1;
  if (scores && (relaxed || open == 0)) {
    best = first_maximum(scores, count);
    int64_t at = 0;
    while (at < open && open_keys[at] < best) ++at;
    if (at == open || open_keys[at] != best) {  // insert, keeping the list in key order
      for (int64_t i = open; i > at; --i) open_keys[i] = open_keys[i - 1];
      open_keys[at] = static_cast<int32_t>(best);
      ++open;
    }
  }
  // Few open keys (trained gates: often one): the top logit and the division walk the list; many: contiguous passes
  // over every key (the division vectorises). The same numbers either way: a closed key's weight stays 0.
  const bool few = !relaxed && 4 * open <= count;
  scalar_t top = -std::numeric_limits<scalar_t>::infinity(), total = 0;
  if (few) {
    for (int64_t i = 0; i < open; ++i) top = logits[open_keys[i]] > top ? logits[open_keys[i]] : top;
  } else {
    const scalar_t closed = -std::numeric_limits<scalar_t>::infinity();
    for (int64_t m = 0; m < count; ++m) {
      const scalar_t candidate = gate(m) | (m == best) ? logits[m] : closed;
      top = candidate > top ? candidate : top;
    }
  }
  std::fill(weight, weight + count, scalar_t(0));
  for (int64_t i = 0; i < open; ++i) {
    const int32_t m = open_keys[i];
    total += weight[m] = std::exp(std::min(logits[m] - top, scalar_t(0)));
  }
  if (relaxed)
    for (int64_t m = 0, i = 0; m < count; ++m) {
      if (i < open && open_keys[i] == m)
        ++i;
      else
        weight[m] = -std::exp(std::min(logits[m] - top, scalar_t(0)));
    }
  if (few)
    for (int64_t i = 0; i < open; ++i) weight[open_keys[i]] /= total;  // a closed key stays 0
  else
    for (int64_t m = 0; m < count; ++m) weight[m] /= total;
  return open;
}

// The weighted bilinear sum of one query's open keys, into sum[:C]; returns the weights times each key's in-map
// bilinear mass (W_v's bias reaches the output through it). Open key i is key open_keys[i] of the query's M = R*K, of
// weight attention[i], with its taps at entry i of ``taps`` (computed for the open keys alone). maps[r]: reference r as
// rows (B*H*W, C); image: the first row of the query's image; zeros: C zeros, read in place of a tap outside the map.
template <typename scalar_t, int FIXED_CHANNELS>
scalar_t sum_open_keys(const std::vector<const scalar_t*>& maps, const KeyTaps<scalar_t>& taps,
                       const int32_t* open_keys, const scalar_t* attention, int64_t open, int64_t keys, int64_t image,
                       int64_t runtime_channels, const scalar_t* zeros, scalar_t* __restrict__ sum) {
  const int64_t channels = FIXED_CHANNELS > 0 ? FIXED_CHANNELS : runtime_channels;
  scalar_t mass = 0;
  for (int64_t i = 0; i < open; ++i) {  // the open keys only: a closed key reads nothing
    const int64_t r = open_keys[i] / keys;
    if (!(attention[i] > 0)) continue;  // an open key whose weight underflowed
    const scalar_t* source[4];
    scalar_t coefficient[4];
    for (int t = 0; t < 4; ++t) {
      const int32_t pixel = taps.pixel[t * open + i];
      source[t] = pixel >= 0 ? maps[r] + (image + pixel) * channels : zeros;
      coefficient[t] = attention[i] * taps.weight[t * open + i];
      mass += coefficient[t];
    }
    const scalar_t* __restrict__ s0 = source[0], * __restrict__ s1 = source[1], * __restrict__ s2 = source[2], * __restrict__ s3 = source[3];
    const scalar_t c0 = coefficient[0], c1 = coefficient[1], c2 = coefficient[2], c3 = coefficient[3];
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) sum[c] += (c0 * s0[c] + c1 * s1[c]) + (c2 * s2[c] + c3 * s3[c]);
  }
  return mass;
}

// CLA/ACLA with predicted logits, (S1)-(S7), one query per iteration. heads (B, H, W, (3 or 4)*R*K): the query's
// offsets (x, y per key), logits and, when gated, gate scores; maps[r]: the raw reference r (B*H*W, C); grid (K, 2):
// the keys' fixed offsets; relaxed (B, H, W, R*K): the relaxed training gates, or null. The open keys' bilinear
// samples of the raw maps are summed with their weights into out[q, :C], and the weights times each key's in-map
// bilinear mass into out[q, C] (W_v's bias reaches the output through it: W_v is applied to the sum, outside).
// counts[q]: the open keys; softmax (B, H, W, R*K): the weights of ``key_weights``, kept for the backward.
template <typename scalar_t, int FIXED_CHANNELS>
void attend_forward_kernel(const std::vector<const scalar_t*>& maps, const scalar_t* heads, const scalar_t* relaxed,
                           const scalar_t* grid, bool gated, scalar_t* __restrict__ out, scalar_t* counts,
                           scalar_t* softmax, int64_t batch, int64_t height, int64_t width, int64_t keys,
                           int64_t runtime_channels) {
  const int64_t channels = FIXED_CHANNELS > 0 ? FIXED_CHANNELS : runtime_channels;
  const int64_t pixels = height * width, refs = maps.size(), per_query = refs * keys;
  const int64_t head_width = (gated ? 4 : 3) * per_query;
  const std::vector<scalar_t> grid_x = grid_column(grid, keys, per_query, 0);
  const std::vector<scalar_t> grid_y = grid_column(grid, keys, per_query, 1);
  at::parallel_for(0, batch * pixels, 64, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> generic(FIXED_CHANNELS > 0 ? 0 : channels);
    const std::vector<scalar_t> zeros(channels, scalar_t(0));
    KeyTaps<scalar_t> taps(per_query);
    std::vector<int32_t> open_keys(per_query);
    std::vector<scalar_t> open_offsets(2 * per_query), open_grid_x(per_query), open_grid_y(per_query);
    std::vector<scalar_t> open_weight(per_query);
    for (int64_t q = begin; q < end; ++q) {
      const scalar_t* offsets = heads + q * head_width;
      scalar_t* weight = softmax + q * per_query;
      const int64_t open =
          key_weights(offsets + 2 * per_query, gated ? offsets + 3 * per_query : nullptr,
                      relaxed ? relaxed + q * per_query : nullptr, per_query, weight, open_keys.data());
      counts[q] = scalar_t(open);
      scalar_t local[FIXED_CHANNELS > 0 ? FIXED_CHANNELS : 1] = {};
      scalar_t* __restrict__ sum = FIXED_CHANNELS > 0 ? local : generic.data();
      if (FIXED_CHANNELS == 0) std::fill(generic.begin(), generic.end(), scalar_t(0));
      const int64_t image = (q / pixels) * pixels, y = (q % pixels) / width, x = q % width;
      for (int64_t i = 0; i < open; ++i) open_weight[i] = weight[open_keys[i]];
      if (open == per_query) {  // every key open (CLA, a fresh ACLA): the taps straight from the heads
        taps.template compute<false>(offsets, grid_x.data(), grid_y.data(), scalar_t(x), scalar_t(y), height, width,
                                     open);
      } else {  // the open keys' offsets, packed: a closed key costs no tap either
        for (int64_t i = 0; i < open; ++i) {
          const int32_t m = open_keys[i];
          open_offsets[2 * i] = offsets[2 * m];
          open_offsets[2 * i + 1] = offsets[2 * m + 1];
          open_grid_x[i] = grid_x[m];
          open_grid_y[i] = grid_y[m];
        }
        taps.template compute<false>(open_offsets.data(), open_grid_x.data(), open_grid_y.data(), scalar_t(x),
                                     scalar_t(y), height, width, open);
      }
      const scalar_t mass = sum_open_keys<scalar_t, FIXED_CHANNELS>(maps, taps, open_keys.data(), open_weight.data(),
                                                                    open, keys, image, channels, zeros.data(), sum);
      std::copy(sum, sum + channels, out + q * (channels + 1));
      out[q * (channels + 1) + channels] = mass;
    }
  });
}

// (S1), (S3) for the open keys of one query: key m's offsets (x, y) are rows 2m and 2m + 1 of W_o times the query's
// features plus their biases, its logit row m of W_a; packed: open key i into offsets[2i], offsets[2i + 1] and
// logits[i]. Two keys per pass: six dot products in flight, where three (one key) wait on their adds.
template <typename scalar_t, int FIXED_CHANNELS>
void project_open_keys(const scalar_t* __restrict__ features, const scalar_t* offset_weight,
                       const scalar_t* offset_bias, const scalar_t* logit_weight, const scalar_t* logit_bias,
                       const int32_t* open_keys, int64_t open, int64_t runtime_channels, scalar_t* offsets,
                       scalar_t* logits) {
  const int64_t channels = FIXED_CHANNELS > 0 ? FIXED_CHANNELS : runtime_channels;
  int64_t i = 0;
  for (; i + 1 < open; i += 2) {
    const int32_t m = open_keys[i], n = open_keys[i + 1];
    const scalar_t* __restrict__ mx = offset_weight + 2 * m * channels, * __restrict__ my = mx + channels;
    const scalar_t* __restrict__ nx = offset_weight + 2 * n * channels, * __restrict__ ny = nx + channels;
    const scalar_t* __restrict__ me = logit_weight + m * channels, * __restrict__ ne = logit_weight + n * channels;
    scalar_t a = 0, b = 0, c = 0, d = 0, e = 0, f = 0;
#pragma omp simd reduction(+ : a, b, c, d, e, f)
    for (int64_t k = 0; k < channels; ++k) {
      a += mx[k] * features[k];
      b += my[k] * features[k];
      c += me[k] * features[k];
      d += nx[k] * features[k];
      e += ny[k] * features[k];
      f += ne[k] * features[k];
    }
    offsets[2 * i] = a + offset_bias[2 * m];
    offsets[2 * i + 1] = b + offset_bias[2 * m + 1];
    logits[i] = c + logit_bias[m];
    offsets[2 * i + 2] = d + offset_bias[2 * n];
    offsets[2 * i + 3] = e + offset_bias[2 * n + 1];
    logits[i + 1] = f + logit_bias[n];
  }
  if (i < open) {
    const int32_t m = open_keys[i];
    const scalar_t* __restrict__ mx = offset_weight + 2 * m * channels, * __restrict__ my = mx + channels;
    const scalar_t* __restrict__ me = logit_weight + m * channels;
    scalar_t a = 0, b = 0, c = 0;
#pragma omp simd reduction(+ : a, b, c)
    for (int64_t k = 0; k < channels; ++k) {
      a += mx[k] * features[k];
      b += my[k] * features[k];
      c += me[k] * features[k];
    }
    offsets[2 * i] = a + offset_bias[2 * m];
    offsets[2 * i + 1] = b + offset_bias[2 * m + 1];
    logits[i] = c + logit_bias[m];
  }
}

// ACLA at inference with deterministic gates (s > 0, (S6)): (S1)-(S7) of ``attend_forward_kernel``, but the offsets
// and logits are projected for the open keys alone, in the walk: key m's offsets are rows 2m and 2m + 1 of W_o (S1)
// and its logit row m of W_a (S3), each times the query's features (its row of ``rows``, (B*H*W, C)) plus the bias.
// With half the keys closed a dense projection of every key would still cost what it costs with all open; here the
// open keys' projections, taps and gathers are all the work that depends on the keys. scores (B*H*W, R*K): the gate
// scores s, projected by the caller (every key's is needed to know which are open). The query with every gate shut
// opens its best-scored key (S7). out and counts as for ``attend_forward_kernel``; no softmax is kept (no backward).
template <typename scalar_t, int FIXED_CHANNELS>
void attend_open_kernel(const std::vector<const scalar_t*>& maps, const scalar_t* rows, const scalar_t* scores,
                        const scalar_t* offset_weight, const scalar_t* offset_bias, const scalar_t* logit_weight,
                        const scalar_t* logit_bias, const scalar_t* grid, scalar_t* __restrict__ out, scalar_t* counts,
                        int64_t batch, int64_t height, int64_t width, int64_t keys, int64_t runtime_channels) {
  const int64_t channels = FIXED_CHANNELS > 0 ? FIXED_CHANNELS : runtime_channels;
  const int64_t pixels = height * width, refs = maps.size(), per_query = refs * keys;
  const std::vector<scalar_t> grid_x = grid_column(grid, keys, per_query, 0);
  const std::vector<scalar_t> grid_y = grid_column(grid, keys, per_query, 1);
  at::parallel_for(0, batch * pixels, 64, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> generic(FIXED_CHANNELS > 0 ? 0 : channels);
    const std::vector<scalar_t> zeros(channels, scalar_t(0));
    KeyTaps<scalar_t> taps(per_query);
    std::vector<int32_t> open_keys(per_query);
    std::vector<scalar_t> open_offsets(2 * per_query), open_grid_x(per_query), open_grid_y(per_query);
    std::vector<scalar_t> open_weight(per_query);
    for (int64_t q = begin; q < end; ++q) {
      const scalar_t* score = scores + q * per_query;
      int64_t open = 0;
      for (int64_t m = 0; m < per_query; ++m) {  // no branch on the gate, as in ``key_weights``
        open_keys[open] = static_cast<int32_t>(m);
        open += score[m] > 0;
      }
      if (open == 0) open_keys[open++] = static_cast<int32_t>(first_maximum(score, per_query));  // (S7)
      counts[q] = scalar_t(open);
      // (S1), (S3): the open keys' offsets and logits; (S4), (S7): the softmax over them
      project_open_keys<scalar_t, FIXED_CHANNELS>(rows + q * channels, offset_weight, offset_bias, logit_weight,
                                                  logit_bias, open_keys.data(), open, channels, open_offsets.data(),
                                                  open_weight.data());
      scalar_t top = -std::numeric_limits<scalar_t>::infinity(), total = 0;
      for (int64_t i = 0; i < open; ++i) {
        const int32_t m = open_keys[i];
        open_grid_x[i] = grid_x[m];
        open_grid_y[i] = grid_y[m];
        top = open_weight[i] > top ? open_weight[i] : top;
      }
      for (int64_t i = 0; i < open; ++i)
        total += open_weight[i] = std::exp(std::min(open_weight[i] - top, scalar_t(0)));
      for (int64_t i = 0; i < open; ++i) open_weight[i] /= total;
      const int64_t image = (q / pixels) * pixels, y = (q % pixels) / width, x = q % width;
      taps.template compute<false>(open_offsets.data(), open_grid_x.data(), open_grid_y.data(), scalar_t(x),
                                   scalar_t(y), height, width, open);
      scalar_t local[FIXED_CHANNELS > 0 ? FIXED_CHANNELS : 1] = {};
      scalar_t* __restrict__ sum = FIXED_CHANNELS > 0 ? local : generic.data();
      if (FIXED_CHANNELS == 0) std::fill(generic.begin(), generic.end(), scalar_t(0));
      const scalar_t mass = sum_open_keys<scalar_t, FIXED_CHANNELS>(maps, taps, open_keys.data(), open_weight.data(),
                                                                    open, keys, image, channels, zeros.data(), sum);
      std::copy(sum, sum + channels, out + q * (channels + 1));
      out[q * (channels + 1) + channels] = mass;
    }
  });
}

// (S6)-(S8) the gate scores' gradient of one query's M keys: the straight-through gates' ((g (1 - r)) r) / tau, g the
// relaxed gate's gradient (what torch's sigmoid and division backward compute from it, r = sigmoid((s + n) / tau)),
// plus the key budget's ((share (1 - p)) p), share its gradient over its count and p = sigmoid(s) (the mean's and the
// sigmoid's backward). Each operation rounds as torch's do: no fused multiply-add (GCC contracts across statements
// unless told not to), so the gradients equal those of the torch graph this replaces, bit for bit.
template <typename scalar_t>
__attribute__((noinline, optimize("fp-contract=off"))) void gate_score_gradients(
    const scalar_t* __restrict__ relaxed_gradient, const scalar_t* __restrict__ relaxed, scalar_t temperature,
    const scalar_t* __restrict__ probability, scalar_t share, int64_t count, scalar_t* __restrict__ out) {
  for (int64_t m = 0; m < count; ++m) {
    scalar_t gradient = 0;
    if (relaxed) {
      const scalar_t through_sigmoid = relaxed_gradient[m] * (scalar_t(1) - relaxed[m]);
      const scalar_t scaled = through_sigmoid * relaxed[m];
      gradient = scaled / temperature;
    }
    if (probability) {
      const scalar_t through_sigmoid = share * (scalar_t(1) - probability[m]);
      const scalar_t budget = through_sigmoid * probability[m];
      gradient = relaxed ? gradient + budget : budget;
    }
    out[m] = gradient;
  }
}

// The gradients of ``attend_forward_kernel`` from its saved softmax: grad (B, H, W, C + 1) of its sums ->
// grad_maps[r] (rows of the raw references, added to; empty when not needed) and grad_heads (B, H, W, head width),
// the gate scores' entries from ``gate_score_gradients``: relaxed (B, H, W, R*K) the relaxed training gates or null,
// probability (B, H, W, R*K) the gate probabilities of the key budget or null (no budget gradient). Per key,
// u_t = <grad[:C], F[row_t]> + grad[C] for each tap gives the weight's gradient da = sum_t w_t u_t and, times the
// weight, the position's (sum_t dw_t/dx u_t). With d = da - <a, da>: the logits
// get a d (the softmax over the open keys), the straight-through gates |a| d, closed keys included (their samples
// are read for it, never scattered to). One image per thread: its taps stay in its own rows.
template <typename scalar_t, int FIXED_CHANNELS>
void attend_backward_kernel(const std::vector<const scalar_t*>& maps, const scalar_t* heads, const scalar_t* softmax,
                            const scalar_t* relaxed, const scalar_t* probability, scalar_t temperature,
                            scalar_t budget_share, const scalar_t* grid, bool gated, const scalar_t* __restrict__ grad,
                            const std::vector<scalar_t*>& grad_maps, scalar_t* __restrict__ grad_heads, int64_t batch,
                            int64_t height, int64_t width, int64_t keys, int64_t runtime_channels) {
  const int64_t channels = FIXED_CHANNELS > 0 ? FIXED_CHANNELS : runtime_channels;
  const int64_t pixels = height * width, refs = maps.size(), per_query = refs * keys;
  const int64_t head_width = (gated ? 4 : 3) * per_query;
  const bool need_maps = !grad_maps.empty();
  const std::vector<scalar_t> grid_x = grid_column(grid, keys, per_query, 0);
  const std::vector<scalar_t> grid_y = grid_column(grid, keys, per_query, 1);
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> d_weight(per_query), d_relaxed(per_query);
    KeyTaps<scalar_t> taps(per_query);
    const std::vector<scalar_t> zeros(channels, scalar_t(0));  // read in place of a tap outside the map
    std::vector<scalar_t> junk(4 * channels);  // written in place of a tap outside the map (or without map grads)
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t q = b * pixels; q < (b + 1) * pixels; ++q) {
        const scalar_t* offsets = heads + q * head_width;
        const scalar_t* weight = softmax + q * per_query;
        const scalar_t* __restrict__ upstream = grad + q * (channels + 1);
        const scalar_t d_mass = upstream[channels];
        scalar_t* d_head = grad_heads + q * head_width;
        const int64_t y = (q % pixels) / width, x = q % width;
        scalar_t inner = 0;  // <a, da> over the open keys
        taps.template compute<true>(offsets, grid_x.data(), grid_y.data(), scalar_t(x), scalar_t(y), height, width,
                                    per_query);
        for (int64_t m = 0, r = 0; r < refs; ++r)
          for (int64_t k = 0; k < keys; ++k, ++m) {
            const scalar_t attention = weight[m];
            d_weight[m] = d_head[2 * m] = d_head[2 * m + 1] = 0;
            if (attention == 0) continue;  // closed without training gates (or a weight that underflowed): no gradient
            const bool open = attention > 0;
            const scalar_t* source[4];
            scalar_t* target[4];
            scalar_t tap_weight[4], along_x[4], along_y[4];
            for (int t = 0; t < 4; ++t) {
              const int32_t pixel = taps.pixel[t * per_query + m];
              const int64_t row = (b * pixels + pixel) * channels;
              source[t] = pixel >= 0 ? maps[r] + row : zeros.data();
              target[t] = pixel >= 0 && need_maps ? grad_maps[r] + row : junk.data() + t * channels;
              tap_weight[t] = taps.weight[t * per_query + m];
              along_x[t] = taps.along_x[t * per_query + m];
              along_y[t] = taps.along_y[t * per_query + m];
            }
            const scalar_t* __restrict__ s0 = source[0], * __restrict__ s1 = source[1], * __restrict__ s2 = source[2], * __restrict__ s3 = source[3];
            scalar_t u0 = 0, u1 = 0, u2 = 0, u3 = 0;  // u_t = <grad, F[row_t]>, the four taps in one pass
#pragma omp simd reduction(+ : u0, u1, u2, u3)
            for (int64_t c = 0; c < channels; ++c) {
              const scalar_t g = upstream[c];
              u0 += g * s0[c];
              u1 += g * s1[c];
              u2 += g * s2[c];
              u3 += g * s3[c];
            }
            const scalar_t u[4] = {u0 + d_mass, u1 + d_mass, u2 + d_mass, u3 + d_mass};
            scalar_t d_a = 0, d_x = 0, d_y = 0;
            for (int t = 0; t < 4; ++t) {  // a tap outside the map weighs 0 and moves nothing
              d_a += u[t] * tap_weight[t];
              d_x += u[t] * along_x[t];
              d_y += u[t] * along_y[t];
            }
            if (need_maps && open) {
              scalar_t* __restrict__ t0 = target[0], * __restrict__ t1 = target[1], * __restrict__ t2 = target[2], * __restrict__ t3 = target[3];
              const scalar_t k0 = attention * tap_weight[0], k1 = attention * tap_weight[1],
                             k2 = attention * tap_weight[2], k3 = attention * tap_weight[3];
#pragma omp simd
              for (int64_t c = 0; c < channels; ++c) {
                const scalar_t g = upstream[c];
                t0[c] += k0 * g;
                t1[c] += k1 * g;
                t2[c] += k2 * g;
                t3[c] += k3 * g;
              }
            }
            d_weight[m] = d_a;
            if (open) {
              inner += attention * d_a;
              d_head[2 * m] = attention * d_x;
              d_head[2 * m + 1] = attention * d_y;
            }
          }
        for (int64_t m = 0; m < per_query; ++m) {
          const scalar_t centred = d_weight[m] - inner;
          d_head[2 * per_query + m] = weight[m] > 0 ? weight[m] * centred : scalar_t(0);  // (S4)
          if (gated) d_relaxed[m] = std::abs(weight[m]) * centred;  // (S6) the straight-through gate's, closed keys too
        }
        if (gated) {
          gate_score_gradients(d_relaxed.data(), relaxed ? relaxed + q * per_query : nullptr, temperature,
                               probability ? probability + q * per_query : nullptr, budget_share, per_query,
                               d_head + 3 * per_query);
        }
      }
    }
  });
}

}  // namespace

// maps: R raw reference rows (B, H, W, C) contiguous; heads (B, H, W, (3 or 4)*R*K), 4 with gates; relaxed
// (B, H, W, R*K) relaxed training gates, or empty; grid (K, 2). Returns the sums (B, H, W, C + 1), the open-key
// counts (B, H, W) and the softmax weights (B, H, W, R*K) the backward reads.
std::vector<torch::Tensor> attend_forward(std::vector<torch::Tensor> maps, torch::Tensor heads, torch::Tensor relaxed,
                                          torch::Tensor grid, bool gated) {
  const int64_t batch = heads.size(0), height = heads.size(1), width = heads.size(2);
  const int64_t keys = grid.size(0), channels = maps[0].size(-1), per_query = keys * maps.size();
  TORCH_CHECK(heads.size(3) == (gated ? 4 : 3) * per_query, "heads must hold (gated ? 4 : 3)*R*K channels");
  TORCH_CHECK(relaxed.numel() == 0 || (gated && relaxed.numel() == batch * height * width * per_query),
              "relaxed gates must be (B, H, W, R*K), with gates");
  auto out = torch::empty({batch, height, width, channels + 1}, maps[0].options());
  auto counts = torch::empty({batch, height, width}, maps[0].options());
  auto softmax = torch::empty({batch, height, width, per_query}, maps[0].options());
  AT_DISPATCH_FLOATING_TYPES(maps[0].scalar_type(), "acla_attend_forward", [&] {
    ACLA_DISPATCH_CHANNELS(channels, attend_forward_kernel, pointers<scalar_t>(maps), heads.data_ptr<scalar_t>(),
                           relaxed.numel() ? relaxed.data_ptr<scalar_t>() : nullptr, grid.data_ptr<scalar_t>(), gated,
                           out.data_ptr<scalar_t>(), counts.data_ptr<scalar_t>(), softmax.data_ptr<scalar_t>(), batch,
                           height, width, keys, channels);
  });
  return {out, counts, softmax};
}

// ACLA at inference (``attend_open_kernel``): maps R x (B, H, W, C) contiguous rows of the raw references; rows
// (B, H, W, C) the query's; scores (B, H, W, R*K) the gate scores; offset_weight (2*R*K, C) and offset_bias W_o's,
// logit_weight (R*K, C) and logit_bias W_a's; grid (K, 2). Returns the sums (B, H, W, C + 1) and the open-key counts
// (B, H, W).
std::vector<torch::Tensor> attend_open_forward(std::vector<torch::Tensor> maps, torch::Tensor rows,
                                               torch::Tensor scores, torch::Tensor offset_weight,
                                               torch::Tensor offset_bias, torch::Tensor logit_weight,
                                               torch::Tensor logit_bias, torch::Tensor grid) {
  const int64_t batch = rows.size(0), height = rows.size(1), width = rows.size(2), channels = rows.size(3);
  const int64_t keys = grid.size(0), per_query = keys * maps.size();
  TORCH_CHECK(maps[0].size(-1) == channels, "the query and the references must have the same channels");
  TORCH_CHECK(scores.numel() == batch * height * width * per_query, "gate scores must be (B, H, W, R*K)");
  TORCH_CHECK(offset_weight.size(0) == 2 * per_query && offset_weight.size(1) == channels &&
                  offset_bias.numel() == 2 * per_query,
              "W_o must be (2*R*K, C) with 2*R*K biases");
  TORCH_CHECK(logit_weight.size(0) == per_query && logit_weight.size(1) == channels && logit_bias.numel() == per_query,
              "W_a must be (R*K, C) with R*K biases");
  auto out = torch::empty({batch, height, width, channels + 1}, maps[0].options());
  auto counts = torch::empty({batch, height, width}, maps[0].options());
  AT_DISPATCH_FLOATING_TYPES(maps[0].scalar_type(), "acla_attend_open_forward", [&] {
    ACLA_DISPATCH_CHANNELS(channels, attend_open_kernel, pointers<scalar_t>(maps), rows.data_ptr<scalar_t>(),
                           scores.data_ptr<scalar_t>(), offset_weight.data_ptr<scalar_t>(),
                           offset_bias.data_ptr<scalar_t>(), logit_weight.data_ptr<scalar_t>(),
                           logit_bias.data_ptr<scalar_t>(), grid.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                           counts.data_ptr<scalar_t>(), batch, height, width, keys, channels);
  });
  return {out, counts};
}

// The gradients of ``attend_forward`` for grad (B, H, W, C + 1), from its softmax: the R maps' (when need_maps) and the
// heads'. relaxed: the relaxed training gates (B, H, W, R*K) at temperature tau (0-dim), or empty; probability: the
// gate probabilities (B, H, W, R*K) whose mean is the key budget, and grad_budget that mean's gradient (0-dim), or both
// empty.
std::vector<torch::Tensor> attend_backward(std::vector<torch::Tensor> maps, torch::Tensor heads, torch::Tensor softmax,
                                           torch::Tensor relaxed, torch::Tensor probability, torch::Tensor temperature,
                                           torch::Tensor grad_budget, torch::Tensor grid, bool gated,
                                           torch::Tensor grad, bool need_maps) {
  const int64_t batch = heads.size(0), height = heads.size(1), width = heads.size(2);
  const int64_t keys = grid.size(0), channels = maps[0].size(-1);
  const bool budget = probability.numel() > 0 && grad_budget.numel() > 0;
  TORCH_CHECK(relaxed.numel() == 0 || relaxed.sizes() == softmax.sizes(), "relaxed gates must be (B, H, W, R*K)");
  TORCH_CHECK(!budget || probability.sizes() == softmax.sizes(), "gate probabilities must be (B, H, W, R*K)");
  std::vector<torch::Tensor> grads;
  if (need_maps)
    for (const auto& map : maps) grads.push_back(torch::zeros_like(map));
  auto grad_heads = torch::empty_like(heads);
  AT_DISPATCH_FLOATING_TYPES(maps[0].scalar_type(), "acla_attend_backward", [&] {
    std::vector<scalar_t*> grad_pointers;
    for (auto& tensor : grads) grad_pointers.push_back(tensor.data_ptr<scalar_t>());
    // the mean's backward: its gradient over the count, in the tensors' precision, as torch divides
    const scalar_t share = budget ? grad_budget.item<scalar_t>() / static_cast<scalar_t>(probability.numel()) : 0;
    ACLA_DISPATCH_CHANNELS(channels, attend_backward_kernel, pointers<scalar_t>(maps), heads.data_ptr<scalar_t>(),
                           softmax.data_ptr<scalar_t>(), relaxed.numel() ? relaxed.data_ptr<scalar_t>() : nullptr,
                           budget ? probability.data_ptr<scalar_t>() : nullptr, temperature.item<scalar_t>(), share,
                           grid.data_ptr<scalar_t>(), gated, grad.data_ptr<scalar_t>(), grad_pointers,
                           grad_heads.data_ptr<scalar_t>(), batch, height, width, keys, channels);
  });
  grads.push_back(grad_heads);
  return grads;
}
