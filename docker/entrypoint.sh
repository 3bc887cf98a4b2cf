#!/bin/sh
# First start: fetch weights and build engines into the volume when missing, then run the command.
set -eu
: "${FTCN_WEIGHTS_DIR:=/data/weights}"
: "${FTCN_ENGINE_DIR:=/data/engines}"
: "${FTCN_ENGINE_BACKENDS:=tensorrt}"
: "${FTCN_ENGINE_BATCH_SIZES:=1,8,32}"
export FTCN_WEIGHTS_DIR FTCN_ENGINE_DIR

if ! ftcn-stream weights verify --quiet >/dev/null 2>&1; then
    echo "ftcn-stream: weights missing in $FTCN_WEIGHTS_DIR; fetching"
    ftcn-stream weights fetch
fi

marker="$FTCN_ENGINE_DIR/.built-$(echo "$FTCN_ENGINE_BACKENDS" | tr ',' '-')"
if [ ! -f "$marker" ]; then
    echo "ftcn-stream: building engines ($FTCN_ENGINE_BACKENDS) into $FTCN_ENGINE_DIR; first start only"
    args=""
    for b in $(echo "$FTCN_ENGINE_BACKENDS" | tr ',' ' '); do args="$args --backend $b"; done
    # shellcheck disable=SC2086
    ftcn-stream build-engines $args --batch-sizes "$FTCN_ENGINE_BATCH_SIZES" --cache-dir "$FTCN_ENGINE_DIR" \
        && touch "$marker"
fi

exec "$@"
