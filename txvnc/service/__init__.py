"""
The assembly: options turned into the token API, the proxy and the worker
pool. The only package that imports both halves.
"""
