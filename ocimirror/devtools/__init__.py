"""Tools for trying ocimirror out and testing it against real parts: a local distribution registry
(:mod:`.registry`), test images built in memory and pushed over the registry API (:mod:`.images`), and a
fault-injecting HTTP proxy to put in front of a registry (:mod:`.faultproxy`).

These are product code: the README demo uses them as well as the tests.
"""
