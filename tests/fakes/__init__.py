"""Loopback fakes of the platforms' HTTP APIs, for tests that use real HTTP."""
