"""
What both halves use and nothing else: how a token is named, which targets
a console may reach, the client behind a trusted proxy, the audit log, PEM
files and the HTTP site both listeners are built on. Imports nothing else of
txvnc (an import-linter contract in pyproject.toml).
"""
