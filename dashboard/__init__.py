"""NERO Explorer dashboard (Streamlit): app.py and its pages read runs written by the engine."""
