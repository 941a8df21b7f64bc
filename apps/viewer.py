"""Streamlit entry point: ``streamlit run apps/viewer.py -- [PATH] [--gt MASK] [--data-root DIR]``."""

from medseg.viewer.ui.app import main

main()
