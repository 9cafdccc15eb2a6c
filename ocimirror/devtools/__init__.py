"""Tools for trying ocimirror out and testing it against real parts: a local distribution registry
(:mod:`.registry`) and test images built in memory and pushed over the registry API (:mod:`.images`).

These are product code: the README demo uses them as well as the tests.
"""
