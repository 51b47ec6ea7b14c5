"""Sample partner deliveries for Jisr: ``generate()`` (the ``jisr generate`` command)."""

from ingestion.generate.core import GenerationSummary, generate

__all__ = ["GenerationSummary", "generate"]
