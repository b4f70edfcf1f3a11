import streamlit as st

from tinyviz.ui import page

page.setup("Train")
st.title("Train")
