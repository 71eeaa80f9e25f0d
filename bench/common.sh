# common.sh - the start that the training benchmarks share; source it, then call
#   bench_start NAME DEFAULT_STEPS "$@"
# which works from the repository root and sets moe (the binary: $1, default build/moe), steps
# ($2, default DEFAULT_STEPS) and out, a fresh folder runs/NAME-DATE for the runs (checkpoints,
# logs; outside version control).
bench_start() {
  local name=$1 default_steps=$2
  shift 2
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  moe=${1:-build/moe}
  steps=${2:-$default_steps}
  out=runs/$name-$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$out"
}
