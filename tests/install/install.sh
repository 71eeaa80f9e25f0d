#!/usr/bin/env bash
# install.sh - libmoe as a program outside the tree meets it: `cmake --install` into a scratch
# prefix puts the header, libmoe.a, libmoe.so with its SOVERSION, the moe command, moe.pc and the
# CMake package in place; examples/train_layer.c builds and runs against them with
# `pkg-config --cflags --libs moe` (shared), with `pkg-config --static` (libmoe.a), and with
# CMake's find_package(moe) (moe::moe and moe::moe_static); and the shared library exports exactly
# the functions moe.h declares (all with the moe_ prefix: -fvisibility=hidden and MOE_API).
# usage: install.sh BUILD_DIR SOURCE_DIR CMAKE CC
set -u
build=$1 src=$2 cmake=$3 cc=$4
. "$(dirname "$0")/../testlib.sh"
prefix=$tmp/prefix
ver=$(awk '/^#define MOE_VERSION_(MAJOR|MINOR|PATCH) /{v = v (v == "" ? "" : ".") $3} END {print v}' "$src/include/moe.h")
major=${ver%%.*}
[[ $ver =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] && ok || bad "no version in moe.h: '$ver'"

expect 0 "" -- "$cmake" --install "$build" --prefix "$prefix"
pc=$(find "$prefix" -name moe.pc | head -1)
libdir=${pc%/pkgconfig/moe.pc}
for f in include/moe.h bin/moe; do [[ -f $prefix/$f ]] && ok || bad "not installed: $f"; done
for f in libmoe.a libmoe.so "libmoe.so.$major" "libmoe.so.$ver" cmake/moe/moeConfig.cmake \
         cmake/moe/moeConfigVersion.cmake cmake/moe/moeTargets.cmake; do
  [[ -n $pc && -e $libdir/$f ]] && ok || bad "not installed: <libdir>/$f (moe.pc: '$pc')"
done
soname=$(readelf -d "$libdir/libmoe.so" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[[ $soname == "libmoe.so.$major" ]] && ok || bad "SONAME '$soname', want libmoe.so.$major"
expect 0 "^Version: $ver\$" -- cat "$pc"
expect 0 "usage" -- "$prefix/bin/moe" bleu --help

# the exported symbols: only moe_ ones, and exactly the functions moe.h declares
nm -D --defined-only "$libdir/libmoe.so" | awk '{print $NF}' | sort > "$tmp/exported"
stray=$(grep -v '^moe_' "$tmp/exported" | tr '\n' ' ')
[[ -z $stray ]] && ok || bad "libmoe.so exports symbols without the moe_ prefix: $stray"
n=$(wc -l < "$tmp/exported")
[[ $n -gt 50 ]] && ok || bad "libmoe.so exports only $n symbols"
echo 'int main(void) { return 0; }' > "$tmp/empty.c"
if "$cc" -aux-info "$tmp/decl.txt" -fsyntax-only -include "$prefix/include/moe.h" "$tmp/empty.c" 2>/dev/null; then
  grep 'moe\.h:' "$tmp/decl.txt" | sed -E 's/.*[ *](moe_[A-Za-z0-9_]+) \(.*/\1/' | sort > "$tmp/declared"
else # a compiler without -aux-info: the declarations' first lines (each starts with MOE_API)
  grep -E '^MOE_API ' "$prefix/include/moe.h" | sed -E 's/^[^(]*[ *](moe_[A-Za-z0-9_]+)\(.*/\1/' | sort > "$tmp/declared"
fi
missing=$(comm -23 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
extra=$(comm -13 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
[[ -z $missing ]] && ok || bad "declared in moe.h but not exported (MOE_API missing?): $missing"
[[ -z $extra ]] && ok || bad "exported but not declared in moe.h: $extra"
echo "install: libmoe.so exports $n symbols, all moe_, $(wc -l < "$tmp/declared") declared in moe.h"
nodecl=$(grep -nE '^[A-Za-z_][A-Za-z0-9_ ]*[ *]moe_[a-z0-9_]+\(' "$prefix/include/moe.h" | grep -vE ':(MOE_API|typedef) ')
[[ -z $nodecl ]] && ok || bad "declarations in moe.h without MOE_API: $nodecl"

# pkg-config: the shared library
export PKG_CONFIG_PATH=$libdir/pkgconfig
flags=$(pkg-config --cflags --libs moe) && ok || bad "pkg-config --cflags --libs moe failed"
expect 0 "" -- "$cc" "$src/examples/train_layer.c" $flags -o "$tmp/ex_pc"
readelf -d "$tmp/ex_pc" 2>/dev/null | grep -q "NEEDED.*\[libmoe.so.$major\]" && ok || bad "ex_pc does not load libmoe.so.$major"
expect 0 "^loss [0-9.]+ -> [0-9.]+" -- env LD_LIBRARY_PATH="$libdir" "$tmp/ex_pc"
expect 0 "^libmoe $ver \\(header $ver\\)" -- env LD_LIBRARY_PATH="$libdir" "$tmp/ex_pc"
# the run really used the installed library: without it on the path the program cannot start
[[ -e /usr/lib/libmoe.so.$major || -e /usr/local/lib/libmoe.so.$major ]] ||
  expect 127 "libmoe" -- "$tmp/ex_pc"
# pkg-config --static: libmoe.a and what it needs
sflags=$(pkg-config --static --libs moe | sed -E 's/(^| )-lmoe( |$)/\1-l:libmoe.a\2/')
expect 0 "" -- "$cc" "$src/examples/train_layer.c" $(pkg-config --cflags moe) $sflags -o "$tmp/ex_static"
readelf -d "$tmp/ex_static" 2>/dev/null | grep -q "NEEDED.*libmoe" && bad "ex_static loads libmoe.so" || ok
expect 0 "^loss [0-9.]+ -> [0-9.]+" -- "$tmp/ex_static"

# CMake: find_package(moe), as examples/CMakeLists.txt does it
unset PKG_CONFIG_PATH
expect 0 "moe $ver found" -- "$cmake" -S "$src/examples" -B "$tmp/ex_cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc"
expect 0 "" -- "$cmake" --build "$tmp/ex_cmake"
expect 0 "^loss [0-9.]+ -> [0-9.]+" -- "$tmp/ex_cmake/train_layer"      # libmoe.so, found by its RPATH
expect 0 "^loss [0-9.]+ -> [0-9.]+" -- "$tmp/ex_cmake/train_layer_static"
readelf -d "$tmp/ex_cmake/train_layer" 2>/dev/null | grep -q "NEEDED.*\[libmoe.so.$major\]" && ok || bad "the CMake build does not load libmoe.so.$major"

# Python: the package where /usr/bin/python3 finds it under the prefix, loading the prefix's
# libmoe.so (moe/_install.py) with no MOE_LIBRARY; and pip with Debian's pip and setuptools
pyver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
pyprefix=$prefix/lib/python$pyver/dist-packages
if [[ ${MOE_INSTALL_PY:-1} == 0 ]]; then
  echo "install: a sanitized build: the Python package checks skipped"
elif [[ -n $pyver ]] && /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
  [[ -f $pyprefix/moe/__init__.py && -f $pyprefix/moe/_install.py ]] && ok || bad "the Python package is not in $pyprefix"
  expect 0 "^$ver $libdir/libmoe.so.$major\$" -- env -u MOE_LIBRARY PYTHONPATH="$pyprefix" /usr/bin/python3 -c \
    'import moe; print(moe.__version__, moe.LIBRARY_PATH)'
  pyproj=$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/python/pyproject.toml")
  [[ $pyproj == "$ver" ]] && ok || bad "python/pyproject.toml says version $pyproj, moe.h $ver"
  if /usr/bin/python3 -m pip --version >/dev/null 2>&1 && /usr/bin/python3 -c 'import setuptools' 2>/dev/null; then
    cp -r "$src/python" "$tmp/pysrc" && rm -rf "$tmp/pysrc/build" "$tmp/pysrc"/*.egg-info
    expect 0 "Successfully installed moe" -- /usr/bin/python3 -m pip install --no-build-isolation --no-deps \
      --no-index --target "$tmp/pip" "$tmp/pysrc"
    expect 0 "^0\.0+$" -- env MOE_LIBRARY="$libdir/libmoe.so.$major" PYTHONPATH="$tmp/pip" /usr/bin/python3 -c \
      'import moe; print(moe.bleu(["a b c d"], ["e f g h"]))'
  else
    echo "install: pip or setuptools missing (apt-get install python3-pip python3-setuptools): pip check skipped"
  fi
else
  echo "install: /usr/bin/python3 with numpy missing: the Python package checks skipped"
fi
finish install
