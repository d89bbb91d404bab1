"""The Streamlit pages: thin views over `chatbot`. Only this package imports streamlit."""
