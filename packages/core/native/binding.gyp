# Built by ../scripts/build-native.js (this package's install script), which passes the locations it found:
#   node-gyp configure -- -Dopenblas_include=DIR -Dopenblas_libdir=DIR [-Ddnnl_include=DIR -Ddnnl_libdir=DIR]
# With dnnl_libdir set, the convolutions also use oneDNN (src/dnnl_conv.cc, WUERSTCHEN_DNNL); without it the
# addon is OpenBLAS only.
{
  "variables": {
    "openblas_include%": "/usr/include/x86_64-linux-gnu/openblas-pthread",
    "openblas_libdir%": "/usr/lib/x86_64-linux-gnu/openblas-pthread",
    "dnnl_include%": "",
    "dnnl_libdir%": ""
  },
  "targets": [
    {
      "target_name": "wuerstchen_native",
      "sources": [
        "src/addon.cc",
        "src/gemm.cc",
        "src/conv.cc",
        "src/depthwise.cc",
        "src/select.cc",
        "src/elementwise.cc",
        "src/fused.cc",
        "src/layout.cc"
      ],
      "include_dirs": ["<(openblas_include)"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fexceptions"],
      "libraries": [
        "-L<(openblas_libdir)",
        "-Wl,-rpath,<(openblas_libdir)",
        "-lopenblas"
      ],
      "conditions": [
        ["dnnl_libdir!=''", {
          "sources": ["src/dnnl_conv.cc"],
          "defines": ["WUERSTCHEN_DNNL"],
          "include_dirs": ["<(dnnl_include)"],
          "libraries": [
            "-L<(dnnl_libdir)",
            "-Wl,-rpath,<(dnnl_libdir)",
            "-ldnnl",
            "-lgomp"
          ]
        }]
      ]
    }
  ]
}
