"""Entry point for `mitmdump -s addon/modelmux_addon.py --set modelmux_config=FILE`.

mitmproxy puts this file's folder on sys.path, so the `modelmux` package beside it imports without
installation. Relative imports would fail here: keep this file a thin shim.
"""

from modelmux.addons import make_addons

addons = make_addons()
