#!/bin/bash
#SBATCH --job-name=molpt
#SBATCH --time=04:00:00
#SBATCH --cpus-per-task=4
#SBATCH --signal=USR1@90           # SIGUSR1 to the job step 90 s before the time limit
#SBATCH --requeue                  # this job may be requeued (by the line at the end, or on preemption)
#SBATCH --open-mode=append         # a requeued run appends to the same output file
# On SIGUSR1 the trainer finishes its step, writes last.pt and exits 75; the job then requeues
# itself and the next run of this script resumes from last.pt (SLURM_RESTART_COUNT counts them).
RUN=${RUN:-checkpoints/molecular_pt_aa_300_450}
PRESET=${PRESET:-aa_300_450}
if [ -f "$RUN/last.pt" ]; then
  srun molpt-tui train --resume "$RUN" --no-ui
else
  srun molpt-tui train --preset "$PRESET" --no-ui --out "$RUN" "$@"
fi
code=$?
if [ $code -eq 75 ]; then scontrol requeue "$SLURM_JOB_ID"; fi
exit $code
