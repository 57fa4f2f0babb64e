"""triagebot: a triage interview for back pain and fever, driven by YAML flows."""

__version__ = "0.1.0"
