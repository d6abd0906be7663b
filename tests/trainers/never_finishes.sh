#!/bin/sh
# A trainer that would run for ten minutes: the job's max_train_time must
# stop it (SIGTERM to its process group) and fail the trial.
echo '{"progress": 0.0, "iteration": 0}'
exec sleep 600
