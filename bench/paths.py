"""Where the benchmarks write: bench/results/ beside this file. Library code (sdk, export) takes a folder from its
caller; the bench CLI passes this one."""
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
