"""Table 1, the training figures and the sweep report, rebuilt from run folders' result files (README.md)."""
