"""Lines tests want shown at the end of the run (see conftest.pytest_terminal_summary)."""

LINES: list[str] = []


def add(line: str) -> None:
    LINES.append(line)
