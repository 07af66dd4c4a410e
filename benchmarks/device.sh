#!/usr/bin/env bash
# One run on a machine with a GPU (or any other, with --quick): install the CUDA extra, then print
#   1. env-steps/s without learning: benchmarks/env_throughput.py (the jitted env alone, and with a
#      scoring policy + top-k), one XLA device;
#   2. env-steps/s with learning and 1 vs N seeds' wall time: benchmarks/train_speed.py
#      --many-seeds N (DSRM-HRL training; N = 16 by default, all seeds in one program);
#   3. Table 4 for every agent: benchmarks/train_speed.py --agent all --only 1;
# and a summary whose lines read `summary: NAME = VALUE` (the JSON of each step is kept in --out).
#
#   bash benchmarks/device.sh                 # GPU machine: pip install -e '.[cuda]', full sizes
#   bash benchmarks/device.sh --quick         # any machine, CPU is fine: tiny world, 2 updates, no install
#   bash benchmarks/device.sh --agents a2c,flat --seeds 8 --out runs/device
#
# Options: --quick (tiny world and budget; no install; seeds 2 and agent a2c unless given),
# --no-install (keep the installed jax), --seeds N (the many-seed case, default 16),
# --agents LIST (Table 4's agents, default all), --out DIR (where the JSON goes; default a new
# temporary directory), --python PY (default $PYTHON, else python). A failed install (no network)
# is reported and the run goes on with the jax already installed; the backend is printed first.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

QUICK=0
INSTALL=1
SEEDS=""
AGENTS=""
OUT=""
PY="${PYTHON:-python}"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --seeds) SEEDS="${2:?--seeds needs a value}"; shift ;;
    --agents) AGENTS="${2:?--agents needs a value}"; shift ;;
    --out) OUT="${2:?--out needs a value}"; shift ;;
    --python) PY="${2:?--python needs a value}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
if [ "$QUICK" = 1 ]; then
  INSTALL=0
  SEEDS="${SEEDS:-2}"
  AGENTS="${AGENTS:-a2c}"
  ENV_ARGS=(--quick --worlds test --topk lax --batch-sizes 256)
  TRAIN_ARGS=(--quick --updates 2)
else
  SEEDS="${SEEDS:-16}"
  AGENTS="${AGENTS:-all}"
  ENV_ARGS=()
  TRAIN_ARGS=()
fi
case "$SEEDS" in ''|*[!0-9]*) echo "device.sh: --seeds must be an integer >= 2; got '$SEEDS'" >&2; exit 2 ;; esac
if [ "$SEEDS" -lt 2 ]; then echo "device.sh: --seeds must be >= 2; got $SEEDS" >&2; exit 2; fi
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/purerec-device-XXXXXX")}"
mkdir -p "$OUT"

if [ "$INSTALL" = 1 ]; then
  echo "== installing the CUDA extra: $PY -m pip install -e '.[cuda]'"
  if ! "$PY" -m pip install --retries 1 --timeout 15 -e '.[cuda]'; then
    echo "warning: the CUDA extra did not install (no network?); going on with the installed jax" >&2
  fi
fi

echo "== devices"
"$PY" -c "import jax; print('jax', jax.__version__, '| backend', jax.default_backend(), '|', jax.devices())"

echo "== 1. env-steps/s without learning (benchmarks/env_throughput.py)"
"$PY" benchmarks/env_throughput.py --devices 1 "${ENV_ARGS[@]}" --json "$OUT/env_throughput.json"

echo "== 2. env-steps/s with learning, 1 vs $SEEDS seeds (benchmarks/train_speed.py --many-seeds $SEEDS)"
"$PY" benchmarks/train_speed.py --many-seeds "$SEEDS" "${TRAIN_ARGS[@]}" --json "$OUT/seeds.json"

echo "== 3. Table 4, agents: $AGENTS (benchmarks/train_speed.py --agent $AGENTS --only 1)"
case "$AGENTS" in *,*|all) AGENT_LIST="$AGENTS" ;; *) AGENT_LIST="$AGENTS," ;; esac  # a list: Table 4's format
"$PY" benchmarks/train_speed.py --agent "$AGENT_LIST" --only 1 "${TRAIN_ARGS[@]}" --json "$OUT/table4.json"

echo "== summary (JSON in $OUT)"
"$PY" - "$OUT" "$SEEDS" <<'EOF'
import json, os, sys

out, n = sys.argv[1], int(sys.argv[2])
env = json.load(open(os.path.join(out, "env_throughput.json")))
seeds = json.load(open(os.path.join(out, "seeds.json")))
table4 = json.load(open(os.path.join(out, "table4.json")))
print(f"summary: backend = {env['meta']['backend']}")
for case in ("env", "score"):
    rows = [r for r in env["rows"] if r["case"] == case]
    if rows:
        best = max(rows, key=lambda r: r["steps_per_s"])
        what = "env alone" if case == "env" else "env + scoring policy + top-k"
        print(f"summary: env_steps_per_s_no_learning_{case} = {best['steps_per_s']:.0f}  "
              f"({what}, {best['world']} world, B = {best['batch']})")
one, many = seeds["1 seed"], seeds[f"{n} seeds"]
print(f"summary: env_steps_per_s_learning_1_seed = {one['steps_per_s_per_seed']:.0f}  ({one['method']} training)")
print(f"summary: env_steps_per_s_learning_{n}_seeds = {many['steps_per_s_total']:.0f}  (all seeds together)")
print(f"summary: wall_s_1_seed = {one['total_s']:.2f}")
print(f"summary: wall_s_{n}_seeds = {many['total_s']:.2f}  ({many['total_s'] / one['total_s']:.2f}x one seed)")
for r in table4.values():
    print(f"summary: table4_wall_s_{r['agent']} = {r['total_s']:.2f}  (compile {r['compile_s']:.1f} s, {r['method']})")
EOF
