"""What every benchmark does with its report: print it and keep it in ``benchmarks/out/<name>.md``."""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).parent / "out"


def publish(lines: list[str], name: str) -> Path:
    """Print the report's ``lines`` and write them to ``benchmarks/out/<name>.md``; that file's path."""
    text = "\n".join(lines)
    print(text)
    out = OUT / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out
