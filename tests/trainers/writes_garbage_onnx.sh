#!/bin/sh
# A trainer that exits 0 but writes a file that is not an ONNX model.
printf 'this is not a protobuf' > "$HOURGLASS_OUTPUT_DIR/model.onnx"
echo '{"auc": 0.99}' > "$HOURGLASS_OUTPUT_DIR/metrics.json"
: > "$HOURGLASS_OUTPUT_DIR/holdout_predictions.txt"
