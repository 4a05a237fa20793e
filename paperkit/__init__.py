"""paperkit: reproduce and extend four fast face anti-spoofing works from notebooks.

Import submodules explicitly (`from paperkit import data, metrics`); importing the package stays light.
"""
__version__ = "0.1.0"
