"""The viewer's logic without Streamlit: loading, display orientation and rendering, lesion
navigation, review, measurements and readouts. Used by the page (:mod:`medseg.viewer.ui`),
the CLI, tests and benchmarks."""
