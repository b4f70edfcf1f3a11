import streamlit as st

from tinyviz.ui import page

page.setup("Compare")
st.title("Compare")
