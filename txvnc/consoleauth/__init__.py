"""
The consoleauth side: the HTTP token API, its key and its stores.
"""
