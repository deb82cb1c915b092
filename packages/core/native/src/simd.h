// WN_MULTIVERSION compiles a function for AVX-512, AVX2+FMA and baseline x86-64; the loader picks the
// best one for the CPU at hand (GCC function multiversioning), so the binary stays portable.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WN_MULTIVERSION
#endif
