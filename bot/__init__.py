"""workbot: the bot for one official work group and the e-government portal."""

__version__ = "0.1.0"
