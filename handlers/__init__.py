"""The chat command language and its handlers (platform-neutral)."""
