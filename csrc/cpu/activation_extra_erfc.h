// The erfc approximation shared by the AVX2 and AVX-512 activation kernels
// (activation_extra_avx2.cpp, activation_extra_avx512.cpp); data only.
//
// For z >= 0, erfc(z) = e^(-z^2) * t * G(t) with t = 1 / (1 + z/2) in (0, 1]. G(t) =
// erfc(z) e^(z^2) / t is smooth on [0, 1] (1 / (2 sqrt pi) at t = 0, 1 at t = 1); the
// degree-10 polynomial below in u = 2t - 1 (coefficients of u^0 .. u^10) was fitted
// for least relative error against math.erfc on z <= 26 and keeps G within 1.8e-7
// relative when evaluated by Horner's rule in float32.
#pragma once

namespace cnnfast::cpu {

inline constexpr int kErfcGDegree = 10;
inline constexpr float kErfcG[kErfcGDegree + 1] = {
    0.5107913613319397f,     0.34358030557632446f,    0.1397358924150467f,     0.01822168007493019f,
    -0.010753105394542217f,  -0.003243539249524474f,  0.001533837290480733f,   0.0004308417555876076f,
    -0.00030532226082868874f, -3.669019861263223e-05f, 4.47537204308901e-05f};

// The same G for GELU's forward only, whose argument is clamped to |x| <= 14.4, i.e.
// z <= 14.4 / sqrt 2 and t in [kGeluTMin, 1]: on that narrower interval a degree-8
// polynomial in u = kGeluUA * t + kGeluUB (u in [-1, 1]) reaches what degree 10 does on
// [0, 1]. Fitted here by iteratively reweighted least squares on Chebyshev nodes for
// relative error against math.erfc; 1.5e-7 relative in float32 Horner evaluation.
inline constexpr int kGeluGDegree = 8;
inline constexpr float kGeluUA = 2.392837100659193f, kGeluUB = -1.392837100659193f;
inline constexpr float kGeluG[kGeluGDegree + 1] = {
    0.571036339f,   0.326586306f,     0.102586955f,   0.00609372184f, -0.00621516025f,
    -0.000650655827f, 0.000596065482f, 2.11762672e-05f, -5.48215903e-05f};

}  // namespace cnnfast::cpu
