"""The web surfaces: signed ack links (and, later, the e-gov API)."""
