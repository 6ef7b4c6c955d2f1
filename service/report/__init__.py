"""Reports of `camserve evaluate` results: a self-contained static HTML page."""
from .html import write_report

__all__ = ["write_report"]
