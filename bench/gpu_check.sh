#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py) as the device tool runs it: everything it writes goes to
# $OUT, the tool's output folder, or to ./gpu_check_out where $OUT is unset. Arguments pass through.
#
#   bash bench/gpu_check.sh --stage        # here, first: the data set's images to data/gpu_check, for the carry
#   bash bench/gpu_check.sh                # there, through the device tool:
#       run(command="bash bench/gpu_check.sh", carry=["data/gpu_check"], timeout_s=540)
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh --smoke --device cpu --epochs 1   # a CPU rehearsal, ~2 min
set -euo pipefail

# The device machine's own python3 (it has torch); here, PYTHON=.venv/bin/python for a rehearsal.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m bench.gpu_check --out "${OUT:-gpu_check_out}" "$@"
