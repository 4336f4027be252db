#!/usr/bin/env bash
# Start the cxr-jetson container in jetson-inference style: the image for this host's L4T version,
# the GPU, data/ and models/ mounted, cameras, display and the web view port passed through.
#
#   docker/run.sh                                        # a shell in the container
#   docker/run.sh --run python3 classify.py csi://0 http://@:8080
#   docker/run.sh --dry-run --run python3 trt_build.py   # print the docker command only
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=host.sh
source "$HERE/host.sh"

APP_DIR=/opt/cxr-jetson   # where the repository lives in the images (their WORKDIR)
# Also probed, overridable for the tests like those in host.sh:
CXR_DEV_DIR=${CXR_DEV_DIR:-/dev}                         # where /dev/video* cameras appear
CXR_ARGUS_SOCKET=${CXR_ARGUS_SOCKET:-/tmp/argus_socket}  # nvargus-daemon's socket (CSI cameras)
CXR_X11_DIR=${CXR_X11_DIR:-/tmp/.X11-unix}               # the X server's sockets

usage() {
    cat <<EOF
usage: docker/run.sh [options] [--run COMMAND [ARGS...]]

Runs the image docker/build.sh built for this host (L4T version from $CXR_L4T_RELEASE_FILE).
data/ and models/ of this repository are mounted at $APP_DIR/data and $APP_DIR/models, the TensorRT
timing cache at ~/.cache/cxr-jetson; /dev/video* cameras, the Argus socket (CSI cameras) and the X
display (when DISPLAY is set) are passed through, and the web view port is published.

options:
  --target full|runtime   which image (default: full; runtime on JetPack 5)
  --image NAME:TAG        run this image instead
  --dev                   mount the whole repository at $APP_DIR (edit on the host, run inside)
  -v, --volume HOST:DIR   mount another directory (repeatable)
  --port N                publish port N as N:N (repeatable; default: 8080, the web view's
                          http://@:8080)
  --dry-run               print the docker run command (one line) instead of running it
  -r, --run COMMAND ...   run COMMAND with its arguments instead of a shell; must come last
  -h, --help              show this help
EOF
}

target="" image="" dev=0 dry_run=0
ports=() volumes=() user_command=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --target) [ $# -ge 2 ] || die "--target needs full or runtime"; target=$2; shift ;;
        --image) [ $# -ge 2 ] || die "--image needs NAME:TAG"; image=$2; shift ;;
        --dev) dev=1 ;;
        -v | --volume) [ $# -ge 2 ] || die "$1 needs HOST_DIR:CONTAINER_DIR"; volumes+=(--volume "$2"); shift ;;
        --port) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--port needs a port number"; ports+=("$2"); shift ;;
        --dry-run) dry_run=1 ;;
        -r | --run)
            shift
            [ $# -gt 0 ] || die "--run needs a command"
            user_command=("$@")
            break
            ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

detect_host
target=${target:-$(default_target)}
check_target "$target"
image=${image:-$(image_name "$target")}
cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/cxr-jetson

command=(docker run --rm --interactive)
# A terminal only when there is one: --run from a script or CI has none, and docker refuses -t then.
[ -t 0 ] && [ -t 1 ] && command+=(--tty)
if [ "$HOST" = jetson ]; then
    command+=(--runtime nvidia)
else
    command+=(--gpus all)
fi
# PyTorch's data loader workers share batches through /dev/shm; docker's default is 64 MB.
command+=(--shm-size 8g --workdir "$APP_DIR")
[ ${#ports[@]} -gt 0 ] || ports=(8080)
for port in "${ports[@]}"; do
    command+=(--publish "$port:$port")
done

[ "$dev" = 1 ] && command+=(--volume "$REPO:$APP_DIR")
command+=(--volume "$REPO/data:$APP_DIR/data" --volume "$REPO/models:$APP_DIR/models")
command+=(--volume "$cache_dir:/root/.cache/cxr-jetson")

shopt -s nullglob
for device in "$CXR_DEV_DIR"/video*; do
    command+=(--device "$device")
done
shopt -u nullglob
if [ "$HOST" = jetson ] && [ -e "$CXR_ARGUS_SOCKET" ]; then
    command+=(--volume "$CXR_ARGUS_SOCKET:/tmp/argus_socket")
fi
if [ -n "${DISPLAY:-}" ]; then
    command+=(--env "DISPLAY=$DISPLAY" --volume "$CXR_X11_DIR:/tmp/.X11-unix")
fi

command+=("${volumes[@]}" "$image" "${user_command[@]}")

if [ "$dry_run" = 1 ]; then
    printf '%q ' "${command[@]}" | sed 's/ $//'
    echo
    exit 0
fi
command -v docker >/dev/null || die "docker is not installed"
# Created here so docker does not create them owned by root.
mkdir -p "$REPO/data" "$REPO/models" "$cache_dir"
if [ -n "${DISPLAY:-}" ] && command -v xhost >/dev/null; then
    # The container runs as root: let local root clients use this display.
    xhost +si:localuser:root >/dev/null || echo "run.sh: xhost failed; display://0 may not open" >&2
fi
exec "${command[@]}"
