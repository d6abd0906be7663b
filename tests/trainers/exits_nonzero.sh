#!/bin/sh
# A trainer that fails: its last lines must reach the failed record.
echo '{"progress": 0.1, "iteration": 1}'
echo "loading $HOURGLASS_TRAIN_FILES" >&2
echo "fatal: the learning rate $HOURGLASS_PARAMS is out of range" >&2
exit 3
