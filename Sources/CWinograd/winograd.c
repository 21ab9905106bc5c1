// Winograd F(4×4, 3×3) for channels-last tensors: see include/CWinograd.h.
//
// Per block of tiles (each tile: a 4×4 output and its 6×6 input), on one thread:
//   1. input transform  V[ξ][t][c] = (Bᵀ d B)[ξ] for every tile t and input channel c, 8 channels a vector;
//   2. 36 small matrix products M[ξ] = V[ξ] · U[ξ] (tiles × in) · (in × out), U the transformed weights;
//   3. output transform y = Aᵀ m A for every tile and 8 output channels, plus bias and activation.
// A block's V and M stay in the core's L2 cache between the three steps.
#include "CWinograd.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

// libgomp's entry point for a parallel region (what GCC emits for `#pragma omp parallel`), and
// the thread's place in it: the pool oneDNN's own parallel regions run on.
extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

int moire_winograd_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void moire_winograd_transform_weights(const float *oihw, int out_channels, int in_channels, float *transformed) {
    static const double g_matrix[6][3] = {
        {1.0 / 4, 0, 0},
        {-1.0 / 6, -1.0 / 6, -1.0 / 6},
        {-1.0 / 6, 1.0 / 6, -1.0 / 6},
        {1.0 / 24, 1.0 / 12, 1.0 / 6},
        {1.0 / 24, -1.0 / 12, 1.0 / 6},
        {0, 0, 1},
    };
    for (int o = 0; o < out_channels; o++) {
        for (int i = 0; i < in_channels; i++) {
            const float *g = oihw + ((size_t)o * in_channels + i) * 9;
            double gg[6][3];  // G g
            for (int r = 0; r < 6; r++) {
                for (int col = 0; col < 3; col++) {
                    gg[r][col] = g_matrix[r][0] * g[0 * 3 + col] + g_matrix[r][1] * g[1 * 3 + col]
                        + g_matrix[r][2] * g[2 * 3 + col];
                }
            }
            for (int r = 0; r < 6; r++) {
                for (int s = 0; s < 6; s++) {
                    double u = gg[r][0] * g_matrix[s][0] + gg[r][1] * g_matrix[s][1] + gg[r][2] * g_matrix[s][2];
                    transformed[((size_t)(r * 6 + s) * in_channels + i) * out_channels + o] = (float)u;
                }
            }
        }
    }
}

/// Tiles per block: a multiple of 6 (the product's row count), small enough that V and M of a
/// block (36 × tiles × (in + out) floats) stay near 256 KB.
static int tiles_per_block(int in_channels, int out_channels) {
    int fit = 65536 / (36 * (in_channels + out_channels));
    int sixes = fit / 6;
    if (sixes < 1) sixes = 1;
    if (sixes > 5) sixes = 5;
    return 6 * sixes;
}

size_t moire_winograd_scratch_floats(const moire_winograd_conv *conv) {
    int tiles = tiles_per_block(conv->in_channels, conv->out_channels);
    return (size_t)36 * tiles * (conv->in_channels + conv->out_channels);
}

/// Bᵀ applied along six vectors (a column or a row of the 6×6 tile).
INLINE AVX2 void input_1d(const __m256 d[6], __m256 r[6]) {
    const __m256 four = _mm256_set1_ps(4), five = _mm256_set1_ps(5), two = _mm256_set1_ps(2);
    __m256 d4_minus_d2 = _mm256_sub_ps(d[4], d[2]);
    __m256 d3_minus_d1 = _mm256_sub_ps(d[3], d[1]);
    __m256 t1 = _mm256_fnmadd_ps(four, d[2], d[4]);  // d4 − 4 d2
    __m256 t2 = _mm256_fnmadd_ps(four, d[1], d[3]);  // d3 − 4 d1
    r[0] = _mm256_fnmadd_ps(five, d[2], _mm256_fmadd_ps(four, d[0], d[4]));  // 4 d0 − 5 d2 + d4
    r[1] = _mm256_add_ps(t1, t2);                                           // −4 d1 − 4 d2 + d3 + d4
    r[2] = _mm256_sub_ps(t1, t2);                                           //  4 d1 − 4 d2 − d3 + d4
    r[3] = _mm256_fmadd_ps(two, d3_minus_d1, d4_minus_d2);                  // −2 d1 − d2 + 2 d3 + d4
    r[4] = _mm256_fnmadd_ps(two, d3_minus_d1, d4_minus_d2);                 //  2 d1 − d2 − 2 d3 + d4
    r[5] = _mm256_fnmadd_ps(five, d[3], _mm256_fmadd_ps(four, d[1], d[5]));  // 4 d1 − 5 d3 + d5
}

/// Aᵀ applied along six vectors.
INLINE AVX2 void output_1d(const __m256 m[6], __m256 o[4]) {
    const __m256 two = _mm256_set1_ps(2), four = _mm256_set1_ps(4), eight = _mm256_set1_ps(8);
    __m256 s12 = _mm256_add_ps(m[1], m[2]), d12 = _mm256_sub_ps(m[1], m[2]);
    __m256 s34 = _mm256_add_ps(m[3], m[4]), d34 = _mm256_sub_ps(m[3], m[4]);
    o[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
    o[1] = _mm256_fmadd_ps(two, d34, d12);
    o[2] = _mm256_fmadd_ps(four, s34, s12);
    o[3] = _mm256_add_ps(_mm256_fmadd_ps(eight, d34, d12), m[5]);
}

typedef struct {
    int tiles_x, tiles_y, tiles, tiles_per_block, blocks;
} tiling;

static tiling tiling_of(const moire_winograd_conv *c) {
    tiling t;
    t.tiles_x = (c->width + 3) / 4;
    t.tiles_y = (c->height + 3) / 4;
    t.tiles = c->batch * t.tiles_x * t.tiles_y;
    t.tiles_per_block = tiles_per_block(c->in_channels, c->out_channels);
    t.blocks = (t.tiles + t.tiles_per_block - 1) / t.tiles_per_block;
    return t;
}

/// Step 1 for one tile (`slot` in the block): V[ξ][slot][c] for every input channel.
static AVX2 void transform_input_tile(
    const moire_winograd_conv *c, const tiling *t, int tile, int slot, float *v) {
    int channels = c->in_channels, tiles = t->tiles_per_block;
    int image = tile / (t->tiles_x * t->tiles_y);
    int within = tile % (t->tiles_x * t->tiles_y);
    int y0 = (within / t->tiles_x) * 4 - 1, x0 = (within % t->tiles_x) * 4 - 1;
    const float *base = c->src + (size_t)image * c->height * c->width * channels;
    int inside = y0 >= 0 && x0 >= 0 && y0 + 6 <= c->height && x0 + 6 <= c->width;
    for (int cg = 0; cg < channels; cg += 8) {
        __m256 rows[6][6];
        for (int i = 0; i < 6; i++) {
            __m256 d[6];
            int y = y0 + i;
            for (int j = 0; j < 6; j++) {
                int x = x0 + j;
                if (inside || (y >= 0 && y < c->height && x >= 0 && x < c->width)) {
                    d[j] = _mm256_loadu_ps(base + ((size_t)y * c->width + x) * channels + cg);
                } else {
                    d[j] = _mm256_setzero_ps();
                }
            }
            input_1d(d, rows[i]);  // rows[i][j]: row i of the tile, Bᵀ along it
        }
        for (int j = 0; j < 6; j++) {
            __m256 column[6] = {rows[0][j], rows[1][j], rows[2][j], rows[3][j], rows[4][j], rows[5][j]};
            __m256 r[6];
            input_1d(column, r);
            for (int i = 0; i < 6; i++) {
                // ξ = i·6 + j: Bᵀ along the columns gives the row index i of Bᵀ d B.
                _mm256_storeu_ps(v + ((size_t)(i * 6 + j) * tiles + slot) * channels + cg, r[i]);
            }
        }
    }
}

/// Step 2 for one ξ: M (tiles × out) = V (tiles × in) · U (in × out), six rows at a time.
static AVX2 void multiply(const float *v, const float *u, float *m, int tiles, int in, int out) {
    for (int r0 = 0; r0 < tiles; r0 += 6) {
        const float *a = v + (size_t)r0 * in;
        int k0 = 0;
        for (; k0 + 16 <= out; k0 += 16) {
            __m256 acc[6][2];
            for (int r = 0; r < 6; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
            for (int ci = 0; ci < in; ci++) {
                __m256 b0 = _mm256_loadu_ps(u + (size_t)ci * out + k0);
                __m256 b1 = _mm256_loadu_ps(u + (size_t)ci * out + k0 + 8);
                for (int r = 0; r < 6; r++) {
                    __m256 x = _mm256_broadcast_ss(a + (size_t)r * in + ci);
                    acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
                }
            }
            for (int r = 0; r < 6; r++) {
                _mm256_storeu_ps(m + (size_t)(r0 + r) * out + k0, acc[r][0]);
                _mm256_storeu_ps(m + (size_t)(r0 + r) * out + k0 + 8, acc[r][1]);
            }
        }
        for (; k0 < out; k0 += 8) {
            __m256 acc[6];
            for (int r = 0; r < 6; r++) acc[r] = _mm256_setzero_ps();
            for (int ci = 0; ci < in; ci++) {
                __m256 b0 = _mm256_loadu_ps(u + (size_t)ci * out + k0);
                for (int r = 0; r < 6; r++) {
                    acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (size_t)r * in + ci), b0, acc[r]);
                }
            }
            for (int r = 0; r < 6; r++) _mm256_storeu_ps(m + (size_t)(r0 + r) * out + k0, acc[r]);
        }
    }
}

/// Step 3 for one tile: y = Aᵀ m A + bias, activated, the part inside the image stored.
static AVX2 void transform_output_tile(
    const moire_winograd_conv *c, const tiling *t, int tile, int slot, const float *m) {
    int channels = c->out_channels, tiles = t->tiles_per_block;
    int image = tile / (t->tiles_x * t->tiles_y);
    int within = tile % (t->tiles_x * t->tiles_y);
    int y0 = (within / t->tiles_x) * 4, x0 = (within % t->tiles_x) * 4;
    float *base = c->dst + (size_t)image * c->height * c->width * channels;
    const __m256 slope = _mm256_set1_ps(c->slope);
    for (int kg = 0; kg < channels; kg += 8) {
        __m256 rows[6][4];
        for (int i = 0; i < 6; i++) {
            __m256 row[6];
            for (int j = 0; j < 6; j++) row[j] = _mm256_loadu_ps(m + ((size_t)(i * 6 + j) * tiles + slot) * channels + kg);
            output_1d(row, rows[i]);  // rows[i][x]: Aᵀ along row i
        }
        __m256 bias = _mm256_loadu_ps(c->bias + kg);
        for (int x = 0; x < 4; x++) {
            __m256 column[6] = {rows[0][x], rows[1][x], rows[2][x], rows[3][x], rows[4][x], rows[5][x]};
            __m256 out[4];
            output_1d(column, out);
            for (int y = 0; y < 4; y++) {
                if (y0 + y >= c->height || x0 + x >= c->width) continue;
                __m256 value = _mm256_add_ps(out[y], bias);
                if (c->leaky_relu) value = _mm256_max_ps(value, _mm256_mul_ps(value, slope));
                _mm256_storeu_ps(base + ((size_t)(y0 + y) * c->width + x0 + x) * channels + kg, value);
            }
        }
    }
}

typedef struct {
    const moire_winograd_conv *conv;
    tiling tiling;
    int failed;  // set by a thread that could not get its scratch
} region;

static AVX2 void run_blocks(void *data) {
    region *job = data;
    const moire_winograd_conv *c = job->conv;
    const tiling *t = &job->tiling;
    int threads = omp_get_num_threads(), me = omp_get_thread_num();
    int first = (int)((long)t->blocks * me / threads), end = (int)((long)t->blocks * (me + 1) / threads);
    if (first >= end) return;
    int in = c->in_channels, out = c->out_channels, per = t->tiles_per_block;
    size_t bytes = moire_winograd_scratch_floats(c) * sizeof(float);
    float *scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!scratch) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *v = scratch, *m = scratch + (size_t)36 * per * in;
    for (int block = first; block < end; block++) {
        int tile0 = block * per;
        int count = t->tiles - tile0 < per ? t->tiles - tile0 : per;
        for (int s = 0; s < count; s++) transform_input_tile(c, t, tile0 + s, s, v);
        if (count < per) {
            // The last block's empty slots: zeros, whose products are never stored.
            for (int xi = 0; xi < 36; xi++) memset(v + ((size_t)xi * per + count) * in, 0, sizeof(float) * (per - count) * in);
        }
        for (int xi = 0; xi < 36; xi++) {
            multiply(
                v + (size_t)xi * per * in, c->transformed_weights + (size_t)xi * in * out, m + (size_t)xi * per * out,
                per, in, out);
        }
        for (int s = 0; s < count; s++) transform_output_tile(c, t, tile0 + s, s, m);
    }
    free(scratch);
}

int moire_winograd_run(const moire_winograd_conv *conv) {
    if (conv->in_channels % 8 != 0 || conv->out_channels % 8 != 0 || !moire_winograd_supported()) return -1;
    region job = {conv, tiling_of(conv), 0};
    if (job.tiling.tiles == 0) return 0;
    GOMP_parallel(run_blocks, &job, 0, 0);
    return job.failed ? -1 : 0;
}
