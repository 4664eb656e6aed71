"""Building UltraChat opening lines: the paper's reference lists, LLM-output list parsing and URL sorting.

Pure-Python groundwork with no Ray and no LLM calls, so each piece can be unit-tested on its own.
"""
