#!/usr/bin/env bash
# The whole chain on a CPU: data -> train.py -> onnx_export.py -> classify.py -> out.jpg.
#
# Uses data/pneumonia when it exists (make it with: python3 -m data.prepare chest_xray.zip);
# otherwise generates a small SYNTHETIC X-ray-like set first. Override with environment variables:
#   DATA=data/pneumonia MODEL=models/demo EPOCHS=8 ./demo.sh
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
DATA=${DATA:-data/pneumonia}
MODEL=${MODEL:-models/demo}

if [ ! -d "$DATA/train" ]; then
    echo "== no data set at $DATA: generating a small SYNTHETIC one (not medical images)"
    DATA=data/synthetic
    "$PYTHON" -m data.synthetic data/synthetic_download --train 100 --val 2 --test 10
    "$PYTHON" -m data.prepare data/synthetic_download --output "$DATA" --force
    EPOCHS=${EPOCHS:-8}
fi
EPOCHS=${EPOCHS:-2}

echo "== train.py: $EPOCHS epoch(s) on $DATA (from scratch: ImageNet weights need a network)"
# --overwrite: each demo run replaces the model the previous demo run made
"$PYTHON" train.py --model-dir "$MODEL" "$DATA" --epochs "$EPOCHS" --no-pretrained --print-freq 0 --seed 0 --overwrite

echo "== onnx_export.py"
"$PYTHON" onnx_export.py --model-dir "$MODEL"

# One held-out image: the test split when there is one, else validation.
IMAGE=""
for split in test val; do
    IMAGE=$(find -L "$DATA/$split" -type f \( -name '*.jp*g' -o -name '*.png' \) 2>/dev/null | sort | tail -n 1)
    [ -n "$IMAGE" ] && break
done
if [ -z "$IMAGE" ]; then
    echo "demo.sh: no image in $DATA/test or $DATA/val to classify" >&2
    exit 1
fi
echo "== classify.py $IMAGE out.jpg"
"$PYTHON" classify.py "$IMAGE" out.jpg --model "$MODEL" --topK 2
echo "== done: out.jpg shows the class and confidence; the model is in $MODEL"
