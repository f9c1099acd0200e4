"""Training data: tile sets joined with their cell libraries, and the paper's batch sampling."""
