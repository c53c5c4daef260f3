"""The main job (`keyreid demo`, `make demo`): run.py trains and tests, report.py writes the report."""

from keyreid.demo.run import DEMO_CONFIG, DEMO_RUNS, RunResult, ensure_synthetic, run_demo

__all__ = ["DEMO_CONFIG", "DEMO_RUNS", "RunResult", "ensure_synthetic", "run_demo"]
