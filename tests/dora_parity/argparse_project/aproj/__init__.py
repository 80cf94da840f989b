"""An argparse training package wrapped by both Dora and adora (signature parity tests)."""
