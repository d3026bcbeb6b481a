"""The side-by-side benchmark runs end to end in its smoke mode (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

COMPARE = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"


def test_compare_smoke_prints_the_table_and_writes_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_DB"}
    done = subprocess.run(
        [sys.executable, str(COMPARE), "--smoke", "--no-peers", "--json", str(out)],
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    header = next((line for line in done.stdout.splitlines() if line.startswith("workload")), None)
    assert header is not None, done.stdout
    for column in ("durable", "naive", "DBOS", "LangGraph", "goal (durable)", "met"):
        assert column in header
    results = json.loads(out.read_text())
    assert set(results["workloads"]) >= {f"W{i}" for i in range(1, 8)}
    for key in (f"W{i}" for i in range(1, 8)):
        assert results["workloads"][key]["rows"], key
        assert results["workloads"][key]["samples"], key
    assert results["machine"]["cpus"]
    # The PostgreSQL rows, on the machine's server (CI has one; elsewhere they may be left out with a note).
    if "PostgreSQL rows skipped" not in done.stdout:
        for key in ("PG-W1", "PG-W2", "PG-W4", "PG-W5"):
            assert results["workloads"][key]["samples"], key
        assert "read back at normal: synchronous_commit=off" in done.stdout
