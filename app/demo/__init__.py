"""Demo data and `rankforge demo`."""
