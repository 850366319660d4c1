#!/usr/bin/env bash
# A local stand-in for the image's base (python:3.12-slim), for OFFLINE TESTS ONLY.
#
#   scripts/base_image.sh [IMAGE]        # IMAGE defaults to docker.io/library/python:3.12-slim
#
# Where no image registry is reachable, no base image can be pulled, so `bentoml containerize` cannot build
# the bento's Dockerfile. This script makes an image of that exact name from Debian packages (mmdebstrap)
# and a CPython build of the same minor version already on this machine (pyenv's tree, or PYTHON_PREFIX),
# so the generated Dockerfile builds unchanged: its FROM finds the local image and no pull happens.
# It is not the real base: Debian 12 (the host's release, which the CPython build links against) instead of
# the official image's, and a little larger (the interpreter's bytecode, which the official image leaves out).
# Never push an image built on it; the release workflow builds on the real base.
#
# Idempotent and cached: when IMAGE already exists locally (pulled, or a stand-in of this recipe) it does nothing.
# Needs root (mmdebstrap), apt access to Debian's archive, binutils' `strip` and `podman` or `docker`
# (ENGINE=podman|docker, else whichever answers).
set -euo pipefail

IMAGE=${1:-docker.io/library/python:3.12-slim}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
HERE=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${ENGINE:-}" ]; then
	if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
	export CONTAINERS_CONF="$HERE/deploy/containers.conf"  # runc and explicit ulimits (docs/ci-cd.md)
fi

# A stand-in carries the digest of the recipe (this file) it was built from: a changed recipe rebuilds it.
RECIPE=$(sha256sum "$HERE/scripts/base_image.sh" | cut -c1-16)
RECIPE_LABEL=org.opencontainers.image.revision
if "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
	labels=$("$ENGINE" image inspect --format '{{json .Config.Labels}}' "$IMAGE")
	built_from=$(grep -oP "\"$RECIPE_LABEL\":\"\K[^\"]*" <<<"$labels" || true)
	if [[ $labels != *offline-test-stand-in* ]] || [ "$built_from" = "$RECIPE" ]; then
		echo "base image $IMAGE exists: not rebuilt ($ENGINE image rm $IMAGE to rebuild it)"
		exit 0
	fi
	echo "base image $IMAGE is a stand-in from an older recipe (${built_from:-unlabelled}): rebuilding it"
fi

# The Python version is the image tag's X.Y (python:3.12-slim -> 3.12).
tag=${IMAGE##*:}
version=$(grep -oE '^[0-9]+\.[0-9]+' <<<"$tag") || {
	echo "cannot read a Python version from the tag of $IMAGE" >&2
	exit 2
}
if [ -z "${PYTHON_PREFIX:-}" ]; then
	PYTHON_PREFIX=$(find "${PYENV_ROOT:-$HOME/.pyenv}/versions" -mindepth 1 -maxdepth 1 -name "$version.*" 2>/dev/null |
		sort -V | tail -n 1)
fi
if [ -z "$PYTHON_PREFIX" ] || [ ! -x "$PYTHON_PREFIX/bin/python$version" ]; then
	echo "no CPython $version build found: set PYTHON_PREFIX to one (its bin/python$version)" >&2
	exit 2
fi
full_version=$("$PYTHON_PREFIX/bin/python$version" -c 'import platform; print(platform.python_version())')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building the offline stand-in $IMAGE: Debian $SUITE + CPython $full_version from $PYTHON_PREFIX"
# The official image's runtime libraries for CPython, plus CA certificates, time zones and netbase, as the
# official image has them: no recommended packages, no translations, manuals or docs but the copyrights.
# The hooks run on the host with "$1" the new root: CPython goes to /usr/local as in the official image, without
# its test suite, static library, IDLE, Tk, the optimised (-O) bytecode or anything installed beside pip, and
# with its native code stripped of debug information and symbols (the official build links with --strip-all;
# pyenv's keeps them: 37 of their 50 MB); its scripts' #! lines point at /usr/local/bin; the host's CA bundle is
# trusted, so package installs work wherever the host's do. /usr is merged by mmdebstrap's hook, as
# debootstrap does, rather than by Debian's usrmerge package, which would pull in Perl (49 MB) for good.
mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	--include=ca-certificates,netbase,tzdata,libsqlite3-0,libssl3,libffi8,libbz2-1.0,liblzma5,zlib1g,libncursesw6,libreadline8,libuuid1,libgdbm6 \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--customize-hook="cp -a '$PYTHON_PREFIX/.' \"\$1/usr/local/\"" \
	--customize-hook="cd \"\$1/usr/local/lib/python$version\" && rm -rf test idlelib tkinter turtledemo config-*/*.a" \
	--customize-hook="find \"\$1/usr/local/lib/python$version\" -name '*.opt-[12].pyc' -delete" \
	--customize-hook="find \"\$1/usr/local/bin/python$version\" \"\$1/usr/local/lib\" -type f -name 'python$version' -o -type f -name '*.so*' | xargs strip --strip-unneeded" \
	--customize-hook="find \"\$1/usr/local/lib/python$version/site-packages\" -mindepth 1 -maxdepth 1 ! -name 'pip' ! -name 'pip-*' ! -name README.txt -exec rm -rf {} +" \
	--customize-hook="grep -rlI '^#!.*python' \"\$1/usr/local/bin\" | xargs sed -i '1s|^#!.*python.*$|#!/usr/local/bin/python$version|'" \
	--customize-hook="ln -sf python3 \"\$1/usr/local/bin/python\"; ln -sf pip3 \"\$1/usr/local/bin/pip\"" \
	--customize-hook="install -m 0644 '$CA_BUNDLE' \"\$1/usr/local/share/ca-certificates/host-bundle.crt\"" \
	--customize-hook="chroot \"\$1\" update-ca-certificates >/dev/null 2>&1" \
	--customize-hook="chroot \"\$1\" ldconfig /usr/local/lib" \
	--customize-hook="chroot \"\$1\" python$version -c 'import ssl, sqlite3, lzma, bz2, ctypes, uuid, readline'" \
	"$SUITE" "$work/rootfs.tar" \
	"deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main"

# The official image's environment, plus what BentoML's installer (uv) needs to trust the CA bundle.
"$ENGINE" import \
	--change "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
	--change "ENV LANG=C.UTF-8" \
	--change "ENV PYTHON_VERSION=$full_version" \
	--change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
	--change "ENV UV_NATIVE_TLS=1" \
	--change "ENV UV_SYSTEM_CERTS=1" \
	--change "LABEL org.opencontainers.image.description=offline-test-stand-in-for-$IMAGE" \
	--change "LABEL $RECIPE_LABEL=$RECIPE" \
	--change 'CMD ["python3"]' \
	"$work/rootfs.tar" "$IMAGE" >/dev/null
echo "built $IMAGE ($("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE") bytes)"
