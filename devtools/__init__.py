"""Development tools: the local stack (`make run`), the demo, and process helpers for bench and tests."""
