#!/bin/sh
# A worked example of the autoscaler's `command` runtime. Its "instances" are drover worker
# processes on this machine, each recorded as a file in $CAPACITY_DIR; replace the bodies with
# your provider's CLI (aws ec2 run-instances, gcloud, a Slurm submit, ...).
#
#   [autoscaler]
#   runtime = "command"
#   [autoscaler.command]
#   launch = ["examples/autoscaler/capacity.sh", "launch"]
#   terminate = ["examples/autoscaler/capacity.sh", "terminate"]
#   list = ["examples/autoscaler/capacity.sh", "list"]
#   timeout = "60s"
#   # The scripts get none of the server's environment but what is named here: the workers
#   # they start find the database through these (or a drover.toml in their directory).
#   env_pass = ["CAPACITY_DIR", "DROVER_DATABASE_URL", "DROVER_CONFIG"]
#
# Protocol: JSON on stdin and stdout; exit 0 = done, 75 = retryable failure, other = permanent.
set -eu
dir="${CAPACITY_DIR:-./capacity-state}"
mkdir -p "$dir"

case "${1:-}" in
launch)
    # Idempotent by slot and generation: asked again, answer with the same instance.
    id="i-$DROVER_SLOT_ID-$DROVER_SLOT_GENERATION"
    if [ ! -f "$dir/$id" ]; then
        # The bootstrap script starts `drover worker --slot ...` (it execs, so $! is drover).
        nohup sh -c "$DROVER_BOOTSTRAP" >/dev/null 2>&1 &
        echo "$! $DROVER_SLOT_ID $DROVER_SLOT_GENERATION" > "$dir/$id"
    fi
    printf '{"instance_id":"%s"}\n' "$id"
    ;;
terminate)
    id=$(sed -n 's/.*"instance_id" *: *"\([^"]*\)".*/\1/p')
    if [ -f "$dir/$id" ]; then
        read -r pid _slot _gen < "$dir/$id"
        kill -TERM "$pid" 2>/dev/null || true # the worker finishes its jobs, then exits
        rm -f "$dir/$id"
    fi
    echo '{}'
    ;;
list)
    printf '['
    sep=''
    for f in "$dir"/i-*; do
        [ -f "$f" ] || continue
        read -r pid slot gen < "$f"
        if kill -0 "$pid" 2>/dev/null; then
            printf '%s{"instance_id":"%s","slot":%s,"generation":%s,"phase":"ready"}' \
                "$sep" "$(basename "$f")" "$slot" "$gen"
            sep=','
        fi
    done
    printf ']\n'
    ;;
*)
    echo "usage: $0 launch|terminate|list" >&2
    exit 64
    ;;
esac
