"""`rlhf report`: figures of runs and ratings."""
