"""X-ray Attribute Explorer pipeline: everything that is not the web app.

simulate → train → infer → embed → metrics, written as runs into the run store (see store.py).
"""

__version__ = "0.1.0"
