"""The repository's documents refer only to documents the repository contains."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Documents of the team's that live outside the repository; the repository has its own (docs/api.md).
OUTSIDE = re.compile(
    "|".join(
        [
            r"\.\./shared",
            "/work" + "/shared",
            r"\bAPI" + r"\.md\b",
            r"seed-report\.md",
            r"STYLE\.md",
            r"PERFORMANCE\.md",
        ]
    )
)
# A Markdown link, or a path-like name of a Markdown document (`docs/api.md`, `README.md`).
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
MARKDOWN_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "grep", "-Il", ""], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in names.splitlines()]


def _written_by_a_command(name: str) -> bool:
    """A report a command writes (under an ignored folder such as reports/), not a document to read."""
    return subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False).returncode == 0


def test_no_file_refers_to_a_document_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _tracked_text_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_every_markdown_link_and_document_a_document_names_exists():
    missing = []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)] if path.suffix == ".md" else []
        for target in targets:
            if not (path.parent / target).exists() and not (ROOT / target).exists():
                missing.append(f"{path.relative_to(ROOT)} links {target}")
        names = MARKDOWN_NAME.findall(text) if path.suffix == ".md" else []
        for name in names:
            if not (ROOT / name).exists() and not (path.parent / name).exists() and not _written_by_a_command(name):
                missing.append(f"{path.relative_to(ROOT)} names {name}")
    assert missing == []
