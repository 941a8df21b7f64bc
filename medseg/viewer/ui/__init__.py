"""The Streamlit page of the viewer: ``app`` (entry point), panels, review controls, access
token, and ``keys`` (every session-state key)."""
