# Shared by scripts/run and scripts/stop (sourced, not executed).
RUN_DIR=${PINSTER_RUN_DIR:-$ROOT/.state/run}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
# The cluster's state (its ImageUploads) lives beside the stored images it describes, so
# both are kept, or purged, together.
export PINSTER_DEVCLUSTER_DIR=${PINSTER_DEVCLUSTER_DIR:-$RUN_DIR/devcluster}
NAMESPACE=pinster
RELEASE=pinster-images

set -o errtrace  # the ERR trap also fires inside functions
CURRENT_STEP=""
CURRENT_HINT=""
# Every step says, when it fails, what to do next.
step() {
  CURRENT_STEP=$1
  CURRENT_HINT=$2
  printf '==> %s\n' "$CURRENT_STEP"
}
ok() { CURRENT_STEP=""; }
on_error() {
  local status=$?
  if [[ -n "$CURRENT_STEP" ]]; then
    printf '\nFAILED: %s (exit %s)\nNext: %s\n' "$CURRENT_STEP" "$status" "$CURRENT_HINT" >&2
  fi
  exit "$status"
}
trap on_error ERR

# True when the pid file names a live process.
alive() {
  [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}
