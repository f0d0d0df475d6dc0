import sys
from pathlib import Path

# the package lives under addon/ (as `mitmdump -s addon/modelmux_addon.py` sees it); tests import it from the
# checkout whether or not it is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addon"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from e2e import emulator, proxy  # noqa: E402, F401  (fixtures: an emulator, and each launcher in turn in front of it)


def pytest_addoption(parser):
    parser.addoption("--responses-via", choices=("modelmux", "recorder"), default="modelmux",
                     help="what the Responses API client tests (marker responses_api) talk to: a real modelmux "
                          "(default) or tests/responses_recorder.py standing in for OpenAI, to check the drivers")


def pytest_terminal_summary(terminalreporter):
    """Counts that tests measured (fault suite, fuzzing), shown in CI's output even when output is captured."""
    if report.LINES:
        terminalreporter.section("modelmux measurements")
        for line in report.LINES:
            terminalreporter.write_line(line)
