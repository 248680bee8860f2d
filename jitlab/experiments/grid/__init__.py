"""The grid orchestrator: paper tables as grid specs, run cell by cell (locally or on SLURM)."""
