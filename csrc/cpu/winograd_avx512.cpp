// The Winograd tile transforms compiled for AVX-512: the same source as the
// generic build (winograd_kernels.h), vectorised by the compiler over 16 tiles.
#define CNNFAST_WINO_NS wino_avx512
#define CNNFAST_WINO_LANES 16
#define CNNFAST_WINO_IMPL_NS avx512_impl
#include "cpu/winograd_kernels.h"
