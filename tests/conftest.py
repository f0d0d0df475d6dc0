import sys
from pathlib import Path

# the package lives under addon/ (as `mitmdump -s addon/modelmux_addon.py` sees it); tests import it from the
# checkout whether or not it is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addon"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
