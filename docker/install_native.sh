#!/usr/bin/env bash
# Install cxr-jetson natively on a Jetson, without Docker. From apt: JetPack's TensorRT Python bindings
# and ONNX parser, Ubuntu's OpenCV (built with GStreamer) and the GStreamer plug-ins for cameras and
# streams. Then the toolkit goes into a virtual environment that sees those system packages, with
# cuda-python and numpy pinned to the JetPack (docker/pin_base_packages.py says why), and the result
# is checked as the images are (docker/check_image.py).
#
#   docker/install_native.sh             # into .venv, for the device path (classify.py, trt_build.py)
#   docker/install_native.sh --dry-run   # print the commands, one per line, instead of running them
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=host.sh
source "$HERE/host.sh"

dry_run=0 venv="$REPO/.venv"
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dry-run) dry_run=1 ;;
        --venv) [ $# -ge 2 ] || die "--venv needs a folder"; venv=$2; shift ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

detect_host
[ "$HOST" = jetson ] || die "this installs on a Jetson; on an x86 machine use docker/build.sh or pip install -e '.[device]'"

run() {
    if [ "$dry_run" = 1 ]; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
    else
        "$@"
    fi
}

# run, with the output into a file
run_into() {
    local file=$1
    shift
    if [ "$dry_run" = 1 ]; then
        printf '%q ' "$@"
        printf '> %q\n' "$file"
    else
        "$@" >"$file"
    fi
}

constraints="$venv/cxr-jetson-constraints.txt"
run sudo apt-get update
run sudo apt-get install -y --no-install-recommends python3-venv python3-pip python3-opencv python3-libnvinfer \
    "libnvonnxparsers$(tensorrt_major)" gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
    gstreamer1.0-plugins-bad gstreamer1.0-libav
run python3 -m venv --system-site-packages "$venv"
# JetPack 5's pip 20 cannot install a pyproject.toml project in editable mode.
run "$venv/bin/python" -m pip install --upgrade pip
run_into "$constraints" "$venv/bin/python" "$HERE/pin_base_packages.py" --cuda-version "$(cuda_release)"
run "$venv/bin/python" -m pip install -c "$constraints" -e "${REPO}[tensorrt,dicom]"
run "$venv/bin/python" "$HERE/check_image.py" --gstreamer --onnx-parser "$(tensorrt_major)"
