// The Winograd tile transforms compiled for AVX2+FMA: the same source as the
// generic build (winograd_kernels.h), vectorised by the compiler over 8 tiles.
#define CNNFAST_WINO_NS wino_avx2
#define CNNFAST_WINO_IMPL_NS avx2_impl
#include "cpu/winograd_kernels.h"
