"""The dashboard pages, one script per view (run by st.navigation from app.py)."""
