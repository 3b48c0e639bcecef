"""The Streamlit dashboard: ``Runs.py`` (entry page), ``pages/`` and the shared helpers of ``common``.

Shipped inside the package, so ``pip install creditlens`` then ``creditlens app`` works anywhere.
The pages are Streamlit scripts, not modules to import; ``creditlens app`` runs ``Runs.py``.
"""
