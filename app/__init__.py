"""The Streamlit dashboard: ``Runs.py`` (entry page), ``pages/`` and the shared helpers of ``common``.

Lives in the repository's top-level ``app/`` and installs as the package ``creditlens.app``
(``package-dir`` in pyproject.toml), so ``creditlens app`` works from a checkout and from a wheel.
The pages are Streamlit scripts, not modules to import; ``creditlens app`` runs ``Runs.py``.
"""
