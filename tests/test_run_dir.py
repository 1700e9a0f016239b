"""run_dir: the code version recorded with every run."""

import subprocess
import sys
from pathlib import Path

import pytest

from adaptive_teacher.run_dir import code_version


def test_the_code_version_names_the_commit_in_a_checkout_and_in_a_git_archive(tmp_path):
    """config.json's written_by: the checkout's commit, or the one git wrote into a ``git archive`` of it
    (export-subst), so that runs trained from an archived snapshot can still be traced to their code."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert code_version()["commit"].startswith(head.stdout.strip()[:12])
    archive = subprocess.run(["git", "-C", str(root), "archive", "HEAD", "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    out = subprocess.run(
        [sys.executable, "-c", "from adaptive_teacher.run_dir import code_version; print(code_version()['commit'])"],
        env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"{head.stdout.strip()[:12]} (git archive)"
