#!/usr/bin/env bash
# Shared by the sbatch scripts in this folder; sourced, not run. Starts one `mellama` task per GPU with
# srun, forwards the early-warning signal, and requeues the job when the ranks stopped cleanly after
# saving a checkpoint (exit 75). The trainer resumes by itself from its run folder's newest checkpoint,
# so a requeued job simply runs the same command again.
#
# Settings (environment, all optional):
#   MELLAMA          the mellama executable (default: artifacts/mellama-cuda/mellama, then `mellama` on PATH)
#   MAX_RESTARTS     stop requeueing after this many restarts (default 50)
#   MELLAMA_JOB_SECRET / MELLAMA_JOB_SECRET_FILE   see "Job secret" in scripts/slurm/README.md
#   MASTER_PORT      rank 0's rendezvous port (default 20000 + job id mod 10000, as mellama derives it)
#   EXTRA_SRUN_ARGS  more srun options, e.g. "--gpu-bind=closest"

readonly REQUEUE_EXIT_CODE=75

mellama_setup() {
  cd "${MELLAMA_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
  mkdir -p logs
  if [[ -z "${MELLAMA:-}" ]]; then
    if [[ -x artifacts/mellama-cuda/mellama ]]; then MELLAMA=$PWD/artifacts/mellama-cuda/mellama; else MELLAMA=$(command -v mellama || true); fi
  fi
  [[ -n "$MELLAMA" && -x "$MELLAMA" ]] || { echo "mellama not found: build it (scripts/slurm/README.md) or set MELLAMA" >&2; exit 2; }

  # The ranks prove membership of this job to each other with a shared secret. A fresh random one per job
  # allocation, inherited by every task through srun's environment, unless the user provides one.
  if [[ -z "${MELLAMA_JOB_SECRET:-}" && -z "${MELLAMA_JOB_SECRET_FILE:-}" ]]; then
    MELLAMA_JOB_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export MELLAMA_JOB_SECRET
  fi
  MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
  MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID%%_*} % 10000))}
  export MASTER_ADDR MASTER_PORT
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  echo "[$(date -Is)] job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NUM_NODES:-1} node(s), ${SLURM_NTASKS:-1} task(s); store ${MASTER_ADDR}:${MASTER_PORT}"
}

# Runs `mellama "$@"` as one task per GPU and decides whether to requeue. Returns the ranks' exit code.
mellama_run() {
  mellama_setup
  local srun_pid rc
  # Slurm signals the batch shell (--signal=B:USR1@T) T seconds before the time limit, and SIGTERM on
  # preemption or scancel. srun passes SIGUSR1/SIGTERM on to every task; the trainer saves and exits 75.
  trap 'echo "[$(date -Is)] USR1: asking the ranks to checkpoint and stop"; kill -USR1 "$srun_pid" 2>/dev/null' USR1
  trap 'echo "[$(date -Is)] TERM: asking the ranks to checkpoint and stop"; kill -TERM "$srun_pid" 2>/dev/null' TERM
  # shellcheck disable=SC2086
  srun --kill-on-bad-exit=1 --label ${EXTRA_SRUN_ARGS:-} "$MELLAMA" "$@" &
  srun_pid=$!
  # `wait` returns early when a trapped signal arrives: keep waiting until srun itself has exited.
  while true; do
    rc=0
    wait "$srun_pid" || rc=$?
    kill -0 "$srun_pid" 2>/dev/null || break
  done
  trap - USR1 TERM
  echo "[$(date -Is)] ranks exited with code $rc"
  if [[ $rc -eq $REQUEUE_EXIT_CODE ]]; then
    local restarts=${SLURM_RESTART_COUNT:-0}
    if (( restarts >= ${MAX_RESTARTS:-50} )); then
      echo "checkpoint saved, but not requeueing: $restarts restarts reached MAX_RESTARTS=${MAX_RESTARTS:-50}" >&2
      return "$rc"
    fi
    echo "[$(date -Is)] checkpoint saved; requeueing job ${SLURM_JOB_ID} (restart $((restarts + 1)))"
    scontrol requeue "$SLURM_JOB_ID" || echo "scontrol requeue failed: resubmit with the same command to resume" >&2
  fi
  return "$rc"
}
