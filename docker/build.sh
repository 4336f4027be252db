#!/usr/bin/env bash
# Build the cxr-jetson image for this machine: on a Jetson from docker/Dockerfile with the base images
# of its L4T version (/etc/nv_tegra_release), on an x86 GPU workstation from docker/Dockerfile.x86.
#
#   docker/build.sh                    # the default target for this host
#   docker/build.sh --target runtime   # Jetson: only what classify.py and trt_build.py need
#   docker/build.sh --dry-run          # print the docker build command instead of running it
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=host.sh
source "$HERE/host.sh"

usage() {
    cat <<EOF
usage: docker/build.sh [options] [-- DOCKER_BUILD_ARGS...]

Builds the image docker/run.sh runs. The base image follows the host's L4T version
($CXR_L4T_RELEASE_FILE), or --l4t / --base when given.

options:
  --target full|runtime  full: train + export + run (JetPack 6, x86); runtime: classify.py and
                         trt_build.py only (Jetson). Default: full; runtime on JetPack 5.
  --l4t VERSION          build for this L4T version (e.g. 35.4.1) instead of the host's
  --base IMAGE           base image for the target instead of the one chosen for the L4T version
  --image NAME:TAG       name of the image (default: cxr-jetson:r<L4T>[-runtime], cxr-jetson:x86_64)
  --dry-run              print the docker build command (one line) instead of running it
  -h, --help             show this help
Arguments after -- go to docker build unchanged (e.g. -- --no-cache).
EOF
}

target="" l4t="" base="" image="" dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --target) [ $# -ge 2 ] || die "--target needs full or runtime"; target=$2; shift ;;
        --l4t) [ $# -ge 2 ] || die "--l4t needs a version, e.g. 36.4.3"; l4t=$2; shift ;;
        --base) [ $# -ge 2 ] || die "--base needs an image"; base=$2; shift ;;
        --image) [ $# -ge 2 ] || die "--image needs NAME:TAG"; image=$2; shift ;;
        --dry-run) dry_run=1 ;;
        --) shift; break ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

if [ -n "$l4t" ]; then
    set_l4t "$l4t"
else
    detect_host
fi
target=${target:-$(default_target)}
check_target "$target"
base=${base:-$(base_image "$target")}
image=${image:-$(image_name "$target")}

# BuildKit builds only the stages the target needs (the legacy builder would build both bases).
command=(env DOCKER_BUILDKIT=1 docker build)
if [ "$HOST" = x86 ]; then
    command+=(--platform linux/amd64 -f "$REPO/docker/Dockerfile.x86" --build-arg "BASE_IMAGE=$base")
else
    # --platform also lets an x86 machine with binfmt/QEMU build a Jetson image (slowly).
    command+=(--platform linux/arm64 -f "$REPO/docker/Dockerfile" --target "$target")
    if [ "$target" = runtime ]; then
        command+=(--build-arg "RUNTIME_BASE_IMAGE=$base")
    else
        command+=(--build-arg "BASE_IMAGE=$base")
    fi
    command+=(--build-arg "CUDA_RELEASE=$(cuda_release)")
    if [ "$target" = runtime ]; then
        command+=(--build-arg "TENSORRT_MAJOR=$(tensorrt_major)" --build-arg "L4T_APT_RELEASE=$(l4t_apt_release)")
    fi
fi
command+=(-t "$image" "$@" "$REPO")

if [ "$dry_run" = 1 ]; then
    printf '%q ' "${command[@]}" | sed 's/ $//'
    echo
    exit 0
fi
command -v docker >/dev/null || die "docker is not installed (on a Jetson: sudo apt-get install nvidia-container)"
echo "building $image ($target) from $base" >&2
exec "${command[@]}"
