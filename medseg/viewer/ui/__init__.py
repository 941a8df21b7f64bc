"""Streamlit widgets of the viewer page."""
