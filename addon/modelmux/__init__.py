"""modelmux: run unmodified OpenAI-API apps on Claude served by Google Vertex AI, as a mitmproxy addon."""

__version__ = "0.1.0"
