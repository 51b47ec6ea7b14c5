"""Jisr's performance benchmark (``make bench`` / ``jisr bench``); see ``bench.run``."""
