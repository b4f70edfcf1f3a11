"""tinyviz: `streamlit run app.py`.

The frame every page shares: page config, the sidebar (run picker, zip upload, write-up bundle),
then ``st.navigation`` runs the page the address names. The pages are in ``app_pages/``.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads sleep instead of spinning

import streamlit as st  # noqa: E402

from tinyviz.ui import page  # noqa: E402

# an emoji favicon is drawn in the page; a :material/...: icon is fetched from fonts.gstatic.com
st.set_page_config(page_title="tinyviz", page_icon="🔬", layout="wide")
navigation = st.navigation(page.pages())
page.frame()
navigation.run()
