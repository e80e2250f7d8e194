"""The Streamlit chat (`streamlit run ui/app.py`): a client of the ask gateway, with no retrieval logic of its own."""
