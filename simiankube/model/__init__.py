"""The architecture model: parse and validate (spec), name (naming), expand (topology), generate.

Pure: no I/O beyond reading the file a caller names, no Kubernetes client, no aiohttp.
"""
