"""The notice core: what handlers, web surfaces and adapters share (below handlers/)."""
