"""Running the DVC pipeline: its first stage, which checks params.yaml and writes each run's resolved settings, and independent stages side by side, longest chain of work first."""
