"""Development and demo tooling (a private Slurm, process helpers): not used by the daemon."""
