"""What training (align/) and evaluation (eval/) both use: result records, model fingerprints, run identity, the
config schema markers and the command-line error report. It imports neither of them (tests/test_imports.py)."""
