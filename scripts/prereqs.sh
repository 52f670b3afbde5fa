#!/usr/bin/env bash
# Installs what the project needs beyond the Rust toolchain, and records how to find it.
#
#   for the C++ reference builds (cpp/llama-ref, cpp/bitnet-ref):
#     cmake >= 3.14, make (or ninja), a C and C++ compiler, libclang with clang's builtin headers
#     (bindgen loads libclang to read llama.h)
#   for `cargo run -p xtask -- fixtures`:
#     pip (PyPI downloads) and npm (npm registry downloads)
#
# Usage: scripts/prereqs.sh [--pypi]
#
# As root with apt-get, missing pieces come from Debian's packages. Otherwise (or with --pypi)
# cmake, ninja and libclang come from PyPI into a project-local venv, target/prereqs-venv; PyPI's
# libclang has no builtin headers, so bindgen is pointed at gcc's instead.
#
# Either way the result is written to target/prereqs.env, which other scripts `source`: it sets
# PATH, LIBCLANG_PATH, BINDGEN_EXTRA_CLANG_ARGS and CMAKE_GENERATOR where they are needed.
# Everything already present is left alone, so a second run only checks and takes a moment.
set -euo pipefail

root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir="$root_dir/target"
venv="$target_dir/prereqs-venv"
env_file="$target_dir/prereqs.env"

# PyPI versions used when Debian's packages cannot be (pinned so every machine builds alike).
pypi_cmake="cmake==3.31.10"
pypi_ninja="ninja==1.13.2"
pypi_libclang="libclang==18.1.1"

use_pypi=false
case "${1:-}" in
    "") ;;
    --pypi) use_pypi=true ;;
    -h | --help)
        sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "prereqs.sh: unknown argument '$1' (usage: scripts/prereqs.sh [--pypi])" >&2
        exit 2
        ;;
esac

say() { echo "prereqs: $*"; }
die() {
    echo "prereqs: error: $*" >&2
    exit 3
}

# Lines of the env file, collected as we go.
env_lines=()
add_env() { env_lines+=("$1"); }

# --- checks ---------------------------------------------------------------------------------

# Succeeds when `cmake` on PATH is at least 3.14.
cmake_ok() {
    command -v cmake >/dev/null 2>&1 || return 1
    local version major minor
    version=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
    [ -n "$version" ] || return 1
    major=${version%%.*}
    minor=${version#*.}
    [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 14 ]; }
}

have() { command -v "$1" >/dev/null 2>&1; }

pip_ok() { have pip || have pip3 || python3 -m pip --version >/dev/null 2>&1; }

# Prints the directory of a system libclang shared library (what clang-sys loads), if any.
system_libclang_dir() {
    local dirs=() dir lib
    if have llvm-config; then
        dirs+=("$(llvm-config --libdir 2>/dev/null || true)")
    fi
    if have ldconfig; then
        # libclang.so, libclang-14.so.1, ... but not libclang-cpp.so.
        while read -r lib; do
            dirs+=("$(dirname "$lib")")
        done < <(ldconfig -p 2>/dev/null | sed -n 's/.*=> \(.*\/libclang\(-[0-9][0-9.]*\)\{0,1\}\.so[0-9.]*\)$/\1/p')
    fi
    for dir in "${dirs[@]}"; do
        [ -n "$dir" ] && [ -d "$dir" ] || continue
        for lib in "$dir"/libclang.so "$dir"/libclang.so.* "$dir"/libclang-[0-9]*.so*; do
            if [ -e "$lib" ]; then
                echo "$dir"
                return 0
            fi
        done
    done
    return 1
}

# Succeeds when clang's builtin headers (stddef.h and friends) are installed system-wide.
clang_headers_ok() {
    local header
    for header in /usr/lib/llvm-*/lib/clang/*/include/stddef.h /usr/lib/clang/*/include/stddef.h \
        /usr/local/lib/clang/*/include/stddef.h; do
        [ -e "$header" ] && return 0
    done
    return 1
}

libclang_ok() { system_libclang_dir >/dev/null && clang_headers_ok; }

# --- Debian packages (root only) ------------------------------------------------------------

if ! $use_pypi && [ "$(id -u)" -eq 0 ] && have apt-get; then
    packages=()
    cmake_ok || packages+=(cmake)
    have make || have ninja || packages+=(make)
    have cc || have gcc || packages+=(gcc)
    have c++ || have g++ || packages+=(g++)
    libclang_ok || packages+=(libclang-dev)
    have clang || packages+=(clang)
    have python3 || packages+=(python3)
    pip_ok || packages+=(python3-pip)
    have npm || packages+=(npm)
    if [ ${#packages[@]} -gt 0 ]; then
        say "installing with apt-get: ${packages[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    else
        say "Debian packages: nothing to install"
    fi
    # Debian's cmake could still be older than 3.14 on an old release: then PyPI's is used below.
fi

# --- PyPI fallback --------------------------------------------------------------------------

need_cmake=false
need_ninja=false
need_libclang=false
if $use_pypi; then
    need_cmake=true
    need_libclang=true
    have make || need_ninja=true
else
    cmake_ok || need_cmake=true
    have make || have ninja || need_ninja=true
    libclang_ok || need_libclang=true
fi

if $need_cmake || $need_ninja || $need_libclang; then
    have python3 || die "python3 is needed to install cmake/libclang from PyPI; install Python 3"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        python3 -m venv "$venv" ||
            die "cannot create a Python venv (Debian: apt-get install python3-venv)"
    fi
    wanted=()
    $need_cmake && wanted+=("$pypi_cmake")
    $need_ninja && wanted+=("$pypi_ninja")
    $need_libclang && wanted+=("$pypi_libclang")
    # pip does nothing (and needs no network) when the pinned versions are already installed.
    missing=()
    for requirement in "${wanted[@]}"; do
        installed=$("$venv/bin/python" -m pip show "${requirement%%==*}" 2>/dev/null |
            sed -n 's/^Version: //p' || true)
        [ "$installed" = "${requirement#*==}" ] || missing+=("$requirement")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing from PyPI into $venv: ${missing[*]}"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
    fi
    if $need_cmake; then
        cmake_bin=$("$venv/bin/python" -c 'import cmake; print(cmake.CMAKE_BIN_DIR)')
        add_env "export PATH=\"$cmake_bin:\$PATH\""
        export PATH="$cmake_bin:$PATH"
    fi
    if $need_ninja; then
        # ninja.BIN_DIR is the venv's bin dir (python, pip, ...): expose only ninja itself.
        ninja_bin="$target_dir/prereqs-bin"
        mkdir -p "$ninja_bin"
        ln -sf "$("$venv/bin/python" -c 'import ninja, os; print(os.path.join(ninja.BIN_DIR, "ninja"))')" \
            "$ninja_bin/ninja"
        add_env "export PATH=\"$ninja_bin:\$PATH\""
        add_env "export CMAKE_GENERATOR=Ninja"
        export PATH="$ninja_bin:$PATH"
    fi
    if $need_libclang; then
        libclang_dir=$("$venv/bin/python" -c \
            'import clang, os; print(os.path.join(os.path.dirname(clang.__file__), "native"))')
        [ -e "$libclang_dir/libclang.so" ] || die "PyPI libclang has no $libclang_dir/libclang.so"
        add_env "export LIBCLANG_PATH=\"$libclang_dir\""
        # PyPI's libclang lacks clang's builtin headers (stddef.h, ...); gcc's serve instead.
        have gcc || die "gcc is needed for its builtin headers (bindgen with PyPI's libclang)"
        gcc_include=$(gcc -print-file-name=include)
        add_env "export BINDGEN_EXTRA_CLANG_ARGS=\"-I$gcc_include\""
    fi
fi
if ! $need_libclang && libclang_dir=$(system_libclang_dir); then
    # clang-sys would search for it too; naming it makes the choice explicit when several exist.
    add_env "export LIBCLANG_PATH=\"$libclang_dir\""
fi

# --- final check and report -----------------------------------------------------------------

problems=()
cmake_ok || problems+=("cmake >= 3.14")
have make || have ninja || problems+=("make or ninja")
have cc || have gcc || problems+=("a C compiler (gcc)")
have c++ || have g++ || problems+=("a C++ compiler (g++)")
$need_libclang || libclang_ok || problems+=("libclang with clang's headers (Debian: libclang-dev)")
pip_ok || problems+=("pip (Debian: python3-pip)")
have npm || problems+=("npm (Debian: npm)")

mkdir -p "$target_dir"
{
    echo "# Written by scripts/prereqs.sh; \`source\` it before building the C++ references."
    for line in "${env_lines[@]}"; do
        echo "$line"
    done
} >"$env_file.tmp"
mv "$env_file.tmp" "$env_file"

say "cmake:    $(command -v cmake 2>/dev/null || echo missing) ($(cmake --version 2>/dev/null | head -n1 || true))"
say "build:    $(command -v make 2>/dev/null || command -v ninja 2>/dev/null || echo missing)"
say "c/c++:    $(command -v cc 2>/dev/null || echo missing), $(command -v c++ 2>/dev/null || echo missing)"
say "libclang: $(grep -o 'LIBCLANG_PATH="[^"]*"' "$env_file" | sed 's/.*="\(.*\)"/\1/')"
say "pip:      $(command -v pip 2>/dev/null || command -v pip3 2>/dev/null || echo 'python3 -m pip')"
say "npm:      $(command -v npm 2>/dev/null || echo missing)"
say "env file: $env_file (source it)"

if [ ${#problems[@]} -gt 0 ]; then
    die "still missing: ${problems[*]}; install them (as root this script uses apt-get)"
fi
