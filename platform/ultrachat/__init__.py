"""UltraChat on Ray: generate instruction dialogues, fine-tune UltraLLaMA, serve it.

The import package lives in the source folder ``platform/`` (no ``__init__.py`` there, so the
standard library's ``platform`` module stays importable).
"""

__version__ = "0.1.0"
