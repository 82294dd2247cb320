# Included right after ggml's project() (CMAKE_PROJECT_ggml_INCLUDE): build one
# CPU backend module instead of one per x86 level. llama-cpp-sys-2 sets
# GGML_CPU_ALL_VARIANTS with its dynamic-backends feature; 14 modules take too
# long for CI, and one module loaded at run time tests the same code path.
set(GGML_CPU_ALL_VARIANTS OFF CACHE BOOL "one CPU module (CI)" FORCE)
