#!/usr/bin/env bash
# Build and install llama-cpp-python (the local LLM node's engine) for this machine's CPU.
#
#   scripts/install-llama-cpp.sh .venv/bin/python
#
# pip builds llama-cpp-python from source; which CPU features the build uses decides the
# local models' speed. Two builds:
#
# - AMX: on a CPU whose /proc/cpuinfo lists amx_int8 and avx512_vnni (Intel Sapphire
#   Rapids and later). llama.cpp then repacks q8_0 / Q4_0 / Q4_1 / K-quant weights for its
#   AMX backend, whose one-token kernels use AVX512-VNNI: SmolLM2 q8_0 decodes about twice
#   as fast as with the AVX2 build (a bare llama.cpp loop on 2 cores: 140-148 against
#   66-77 tokens/s). Its tiles need llama.cpp on a thread of its own; see
#   flowbuilder.providers.local.on_llama_thread. It is compiled with clang, installed here from
#   Debian when missing (root needed): GCC 12 drops the stores that fill llama.cpp's AMX
#   tile configuration, so every batched matrix product faults with SIGILL
#   (ggml-org/llama.cpp pull request 26954 describes the fault). Clang spells the AMX
#   macros __AMXINT8__ / __AMXTILE__, and llama.cpp tests GCC's __AMX_INT8__ /
#   __AMX_TILE__, so both are defined on the command line.
# - AVX2 otherwise (or without root to install clang): x86-64 with AVX2/FMA/F16C, the
#   compiler's default.
#
# CMAKE_ARGS in the environment overrides the choice. The build used is written to
# <venv>/.llama-cpp-build; a later run with the same build and an importable llama_cpp
# does nothing. pip's wheel cache is bypassed (it is keyed by version, not by options).
set -euo pipefail
python=${1:?usage: install-llama-cpp.sh <venv python>}
venv=$(dirname "$(dirname "$python")")
version=$(grep -o 'llama-cpp-python==[0-9.]*' "$(dirname "$0")/../pyproject.toml")

avx2="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
amx_defines="-D__AMX_INT8__=1 -D__AMX_TILE__=1"
amx="-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ $avx2 -DGGML_AVX_VNNI=ON \
-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
-DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON"

has_flags() {
    local flag
    for flag in "$@"; do
        grep -qw "$flag" /proc/cpuinfo 2>/dev/null || return 1
    done
}

if [ -n "${CMAKE_ARGS:-}" ]; then
    build="custom"
    args=$CMAKE_ARGS
elif has_flags amx_int8 amx_tile avx512f avx512bw avx512vl avx512_vnni avx512vbmi avx512_bf16; then
    if ! command -v clang++ >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "install-llama-cpp.sh: installing clang and libomp-dev for the AMX build" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq clang libomp-dev >&2
    fi
    if command -v clang++ >/dev/null 2>&1; then
        build="amx"
        args=$amx
    else
        echo "install-llama-cpp.sh: clang is missing (apt-get install clang libomp-dev as" \
            "root for the faster AMX build); building for AVX2" >&2
        build="avx2"
        args=$avx2
    fi
else
    build="avx2"
    args=$avx2
fi

marker="$venv/.llama-cpp-build"
wanted="$version $build $args"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ] && "$python" -c "import llama_cpp" 2>/dev/null; then
    exit 0
fi

echo "install-llama-cpp.sh: building $version ($build build, about 7 minutes on 2 cores)" >&2
export CMAKE_ARGS="$args"
if [ "$build" = "amx" ]; then
    export CFLAGS="${CFLAGS:-} $amx_defines" CXXFLAGS="${CXXFLAGS:-} $amx_defines"
fi
"$python" -m pip install --no-cache-dir --force-reinstall --no-deps "$version"  # prints "still running..."
"$python" -m pip install -q "$version"  # its dependencies
printf '%s\n' "$wanted" > "$marker"
