#!/usr/bin/env bash
# Installs the system libraries the project needs when the machine lacks them:
# libvips with a JPEG2000 loader (Debian's libvips42 links OpenJPEG; the
# pyvips-binary wheel has no JPEG2000 loader), OpenJPEG's command-line tools
# (test and sample images), Grok's library and header (the optional "grok"
# JPEG2000 engine, so its tests run; the decoder needs only the library),
# libmagic (the IIIF validator needs it), and a C compiler with libjpeg's
# headers and cmake (decoder/native and its OpenJPEG 2.5.4, built by
# `make install`).
set -euo pipefail

missing=()
# Whole outputs are captured first: `cmd | grep -q` can end `cmd` with SIGPIPE,
# which `pipefail` would report as a failure.
libs=$(ldconfig -p 2>/dev/null || true)
vips_so=$(awk '/libvips\.so\.42 /{print $NF; exit}' <<<"$libs")
vips_deps=""
[ -n "$vips_so" ] && vips_deps=$(ldd "$vips_so" 2>/dev/null || true)
case "$vips_deps" in
  *libopenjp2*) ;;
  *) missing+=(libvips42) ;;
esac
command -v opj_compress >/dev/null 2>&1 || missing+=(libopenjp2-tools)
case "$libs" in
  *"libmagic.so.1 "*) ;;
  *) missing+=(libmagic1) ;;
esac
optional=()
case "$libs" in
  *"libgrokj2k.so.1 "*) ;;
  *) optional+=(libgrokj2k1) ;;
esac
# grok.h only for the test that checks the engine's struct layouts against it.
[ -f /usr/include/grok-10.0/grok.h ] || optional+=(libgrokj2k1-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
[ -f /usr/include/jpeglib.h ] || missing+=(libjpeg62-turbo-dev)

[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  if [ ${#missing[@]} -eq 0 ]; then
    echo "No apt-get here: ${optional[*]} not installed (its tests will be skipped)." >&2
    exit 0
  fi
  echo "No apt-get here: install ${missing[*]} (libvips >= 8.12 with OpenJPEG) by hand." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get update -qq; then
  [ ${#missing[@]} -eq 0 ] || exit 1
  echo "apt-get update failed: ${optional[*]} not installed (its tests will be skipped)." >&2
  exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing system packages: ${missing[*]}" >&2
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  # Optional: a distribution without it (Grok 10 is Debian bookworm's) only skips its tests.
  echo "Installing optional system packages: ${optional[*]}" >&2
  $sudo apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null \
    || echo "Could not install ${optional[*]}: the grok engine's tests will be skipped." >&2
fi
