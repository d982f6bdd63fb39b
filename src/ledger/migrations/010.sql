-- A run on a Slurm cluster: its job id (`pid` stays a process id on this machine).
ALTER TABLE runs ADD COLUMN slurm_job INTEGER;
