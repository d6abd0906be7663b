#!/bin/sh
# The reference trainer, then its holdout predictions nudged: the model it
# exported no longer computes what it claims, which the worker must catch.
set -e
"$(dirname "$0")/../../.venv/bin/python" "$(dirname "$0")/../../trainers/lightgbm_onnx.py"
f="$HOURGLASS_OUTPUT_DIR/holdout_predictions.txt"
awk 'NR == 7 { print $1 + 0.001; next } { print }' "$f" > "$f.new"
mv "$f.new" "$f"
