"""The reference (from every public docstring) and the deployment page build with mkdocs in strict mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from servers import ROOT


def test_the_docs_build_strictly_and_the_reference_has_every_public_name(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    import durable

    missing = [name for name in durable.__all__ if f'id="durable.{name}' not in reference and name[0].isupper()]
    missing = [n for n in missing if not any(f'id="durable.{m}.{n}"' in reference for m in ("errors", "schedules"))]
    assert missing == [], f"public names without a reference entry: {missing}"
    assert "answer" in reference and "reassign" in reference and "pause_schedule" in reference
    assert (tmp_path / "site" / "deployment" / "index.html").exists()
