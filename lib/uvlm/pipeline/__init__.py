"""Running the DVC pipeline: independent stages side by side, longest chain of work first."""
