# Built by ../scripts/build-native.js (this package's install script), which passes the OpenBLAS locations it found:
#   node-gyp configure -- -Dopenblas_include=DIR -Dopenblas_libdir=DIR
{
  "variables": {
    "openblas_include%": "/usr/include/x86_64-linux-gnu/openblas-pthread",
    "openblas_libdir%": "/usr/lib/x86_64-linux-gnu/openblas-pthread"
  },
  "targets": [
    {
      "target_name": "wuerstchen_native",
      "sources": [
        "src/addon.cc",
        "src/gemm.cc",
        "src/conv.cc",
        "src/depthwise.cc",
        "src/elementwise.cc",
        "src/layout.cc"
      ],
      "include_dirs": ["<(openblas_include)"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-O3", "-fopenmp-simd"],
      "libraries": [
        "-L<(openblas_libdir)",
        "-Wl,-rpath,<(openblas_libdir)",
        "-lopenblas"
      ]
    }
  ]
}
