"""The viewer: ``core/`` (logic, no Streamlit), ``ui/`` (the Streamlit page; ``medseg view`` runs
``ui/app.py``) and ``launch`` (the CLI side: arguments and the server process).
"""
