"""Browser tests of the page (see conftest.py)."""
