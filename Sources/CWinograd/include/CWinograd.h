// Winograd F(4×4, 3×3) convolution for channels-last float tensors on AVX2 and FMA.
//
// The denoiser's 3×3 inference convolutions (stride 1, zero padding 1, channels a multiple of 8)
// run here wherever the CPU has AVX2 and FMA: oneDNN 2.6 has Winograd only for AVX-512, and its
// direct AVX2 convolutions already run at the FMA peak. F(4×4, 3×3) does a 4×4 output tile with 36
// multiplies per input and output channel instead of 144 (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016; the transform matrices are theirs, points 0, ±1, ±2, ∞).
// The threads are libgomp's, the pool oneDNN itself runs on, so the two never compete for cores.
#ifndef MOIRE_WINOGRAD_H
#define MOIRE_WINOGRAD_H

#include <stddef.h>

/// 1 when this CPU runs the kernels (AVX2 and FMA), else 0.
int moire_winograd_supported(void);

/// The weights transformed for the kernel: `oihw` is [out][in][3][3]; `transformed` receives
/// 36 × in × out floats ([position][in][out]).
void moire_winograd_transform_weights(const float *oihw, int out_channels, int in_channels, float *transformed);

/// One convolution: dst = activation(conv(src, weights) + bias), both channels-last [n][h][w][c].
typedef struct {
    const float *src;
    int batch, height, width, in_channels;    // in_channels: a multiple of 8
    const float *transformed_weights;         // from moire_winograd_transform_weights
    const float *bias;                        // out_channels floats
    int out_channels;                         // a multiple of 8
    int leaky_relu;                           // 1: apply LeakyReLU with `slope` (0 ≤ slope ≤ 1)
    float slope;
    float *dst;
} moire_winograd_conv;

/// Floats of scratch one thread needs for `conv` (moire_winograd_run allocates it per thread).
size_t moire_winograd_scratch_floats(const moire_winograd_conv *conv);

/// Runs `conv` on libgomp's threads. Returns 0, or -1 when the channel counts are not multiples
/// of 8, the CPU lacks AVX2/FMA or scratch memory could not be had (the output is then incomplete).
int moire_winograd_run(const moire_winograd_conv *conv);

#endif
