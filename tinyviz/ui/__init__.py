"""Streamlit glue: the only package in tinyviz that imports streamlit."""
