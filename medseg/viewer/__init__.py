"""Rendering, navigation, loading and launch helpers behind the Streamlit viewer.

``medseg.viewer.app`` is the Streamlit page itself (``medseg view`` runs it); the other modules
are Streamlit-free and used by the app, the tests and ``benchmarks/bench_viewer.py``.
"""
