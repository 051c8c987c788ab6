"""BluesMinds: a self-hosted, OpenAI-compatible gateway in front of LiteLLM servers."""

__version__ = "0.1.0"
