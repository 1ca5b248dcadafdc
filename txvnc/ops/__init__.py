"""
What an operator runs the halves with: health and readiness, metrics,
graceful shutdown, SIGHUP reloads, log formats and the reactor's spin.
Used by the assembly (L{txvnc.service}); never by the halves themselves.
"""
