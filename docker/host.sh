# shellcheck shell=bash
# Sourced by build.sh and run.sh: what machine this is, which base images fit it, what the image is
# called. One place, so the two scripts always agree on names.
#
# Everything probed comes from an environment variable with the real default, so the tests can
# simulate a JetPack 5, JetPack 6 or x86 host with fake files:
#   CXR_HOST_ARCH         machine type (default: uname -m); x86_64 is an x86 GPU workstation
#   CXR_L4T_RELEASE_FILE  the L4T release file (default: /etc/nv_tegra_release)

CXR_HOST_ARCH=${CXR_HOST_ARCH:-$(uname -m)}
CXR_L4T_RELEASE_FILE=${CXR_L4T_RELEASE_FILE:-/etc/nv_tegra_release}
IMAGE_REPO=cxr-jetson

# Base images (evidence and alternatives in docs/deploy-jetson.md). docker/Dockerfile's ARG defaults
# repeat the JetPack 6 ones and docker/Dockerfile.x86's the x86 one; tests/test_docker.py checks.
#
# JetPack 5.1.x (L4T R35.2+, Ubuntu 20.04, Python 3.8, CUDA 11.4): NVIDIA's TensorRT 8.5.2 runtime
# image; 8.5.2 is the TensorRT of every JetPack 5.1.x, and L4T R35 containers run across R35.x.
JP5_RUNTIME_BASE=nvcr.io/nvidia/l4t-tensorrt:r8.5.2-runtime
# No JetPack 5 full base: pyproject's train extra needs torch>=2.1, and the newest CUDA PyTorch for
# JetPack 5 (NVIDIA's wheel, also in dustynv/pytorch:2.1-r35.4.1) is 2.1.0a0, a pre-release below 2.1.
# JetPack 6.1/6.2 (L4T R36.4, Ubuntu 22.04, Python 3.10, CUDA 12.6): TensorRT 10.3 runtime image...
JP6_RUNTIME_BASE=nvcr.io/nvidia/l4t-tensorrt:r10.3.0-runtime
# ...and NGC PyTorch 24.08 for Jetson's integrated GPU: torch 2.5.0a0+872d972e41 (the commit of
# NVIDIA's JetPack 6.1 wheel), torchvision 0.20, TensorRT 10.3, CUDA 12.6, Python 3.10: the same
# TensorRT and CUDA as JetPack 6.1/6.2 itself, so engines match the runtime image and native installs.
JP6_FULL_BASE=nvcr.io/nvidia/pytorch:24.08-py3-igpu
# x86 workstation with an NVIDIA GPU: the same NGC release for discrete GPUs (TensorRT 10.3,
# CUDA 12.6, Python 3.10; needs driver 560+, or 470/525/535/545 on data-center GPUs).
X86_BASE=nvcr.io/nvidia/pytorch:24.08-py3

die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 2
}

# Sets HOST (jetson or x86) and, on a Jetson, L4T_MAJOR (36) and L4T_VERSION (36.4.3).
detect_host() {
    case "$CXR_HOST_ARCH" in
        x86_64 | amd64)
            HOST=x86
            ;;
        aarch64 | arm64)
            [ -r "$CXR_L4T_RELEASE_FILE" ] ||
                die "no $CXR_L4T_RELEASE_FILE: this arm64 machine is not a Jetson with L4T"
            parse_release_line "$(head -n 1 "$CXR_L4T_RELEASE_FILE")"
            ;;
        *)
            die "unsupported machine '$CXR_HOST_ARCH': a Jetson (aarch64) or an x86_64 GPU host is needed"
            ;;
    esac
}

# "# R36 (release), REVISION: 4.3, GCID: ..." -> L4T 36.4.3
parse_release_line() {
    local pattern='^# R([0-9]+) \(release\), REVISION: ([0-9]+(\.[0-9]+)*)'
    [[ $1 =~ $pattern ]] || die "cannot read the L4T version from $CXR_L4T_RELEASE_FILE: '$1'"
    set_l4t "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
}

# Accepts 36.4.3, r36.4.3 or R36.4.3.
set_l4t() {
    local version=${1#[rR]}
    [[ $version =~ ^[0-9]+(\.[0-9]+)+$ ]] || die "not an L4T version: '$1' (expected e.g. 36.4.3)"
    HOST=jetson
    L4T_VERSION=$version
    L4T_MAJOR=${version%%.*}
    case "$L4T_MAJOR" in
        35 | 36) ;;
        *) die "L4T R$L4T_VERSION is not supported: JetPack 5.1 (L4T R35.2 or later) or JetPack 6 (L4T R36) is needed" ;;
    esac
    # R35.1 is JetPack 5.0.2 with TensorRT 8.4; the toolkit needs TensorRT 8.5 (JetPack 5.1, R35.2.1).
    if [ "$L4T_MAJOR" = 35 ] && [ "$(echo "$version" | cut -d. -f2)" -lt 2 ]; then
        die "L4T R$L4T_VERSION is JetPack 5.0 (TensorRT 8.4): JetPack 5.1 (L4T R35.2 or later) is needed"
    fi
}

# The target built and run when none is named: JetPack 5 has only the runtime image.
default_target() {
    if [ "$HOST" = jetson ] && [ "$L4T_MAJOR" = 35 ]; then
        echo runtime
    else
        echo full
    fi
}

check_target() {
    case "$1" in
        full) ;;
        runtime) [ "$HOST" = jetson ] || die "--target runtime is for Jetsons; the x86 image is one full image" ;;
        *) die "unknown target '$1' (choose full or runtime)" ;;
    esac
}

# cxr-jetson:r36.4.3 (full), cxr-jetson:r36.4.3-runtime, cxr-jetson:x86_64
image_name() {
    if [ "$HOST" = x86 ]; then
        echo "$IMAGE_REPO:x86_64"
    elif [ "$1" = runtime ]; then
        echo "$IMAGE_REPO:r$L4T_VERSION-runtime"
    else
        echo "$IMAGE_REPO:r$L4T_VERSION"
    fi
}

# The base image of a target on this host; dies with the reason when there is none.
base_image() {
    local revision
    if [ "$HOST" = x86 ]; then
        echo "$X86_BASE"
        return
    fi
    if [ "$L4T_MAJOR" = 35 ]; then
        [ "$1" = runtime ] ||
            die "no JetPack 5 base has torch>=2.1 (NVIDIA's newest JetPack 5 PyTorch is 2.1.0a0): build --target runtime here and train on JetPack 6 or x86, or pass --base IMAGE with torch>=2.1"
        echo "$JP5_RUNTIME_BASE"
        return
    fi
    revision=$(echo "$L4T_VERSION" | cut -d. -f2)
    [ "${revision:-0}" -ge 4 ] ||
        die "L4T R$L4T_VERSION (JetPack 6.0) has TensorRT 8.6 and CUDA 12.2; the JetPack 6 images need R36.4 (JetPack 6.1 or 6.2): upgrade JetPack, or pass --base IMAGE"
    if [ "$1" = runtime ]; then
        echo "$JP6_RUNTIME_BASE"
    else
        echo "$JP6_FULL_BASE"
    fi
}

# CUDA version of the JetPack, for the cuda-python pin (docker/pin_base_packages.py): 11.4 on
# JetPack 5.1.x, 12.6 on JetPack 6.1/6.2.
cuda_release() {
    if [ "$L4T_MAJOR" = 35 ]; then echo 11.4; else echo 12.6; fi
}

# TensorRT's major version on the JetPack: its ONNX parser is libnvonnxparser.so.8 or .so.10.
tensorrt_major() {
    if [ "$L4T_MAJOR" = 35 ]; then echo 8; else echo 10; fi
}

# The Jetson apt repository release of the JetPack (repo.download.nvidia.com/jetson/common).
l4t_apt_release() {
    if [ "$L4T_MAJOR" = 35 ]; then echo r35.4; else echo r36.4; fi
}
