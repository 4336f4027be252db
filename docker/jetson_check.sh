#!/usr/bin/env bash
# The first hour on a Jetson: is everything the toolkit needs there, and does an engine build and run?
# One line per check (JetPack, OpenCV, TensorRT and its ONNX parser, CUDA, an engine build, one
# inference per back-end against ONNX Runtime, cameras), with the time each took; it stops at the
# first GPU check that fails, with the reason and a non-zero exit. Run it natively after
# docker/install_native.sh, or in an image: docker/run.sh --run docker/jetson_check.sh
#
#   docker/jetson_check.sh                          # with a small demo model made on the spot
#   docker/jetson_check.sh --model models/pneumonia # with your exported model
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PYTHON=${PYTHON:-python3}
if [ -x "$REPO/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    PYTHON="$REPO/.venv/bin/python"
fi
cd "$REPO"
exec "$PYTHON" -m cxr_jetson.edge.device_check "$@"
