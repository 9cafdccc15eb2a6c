"""Sample sources for the demo, the bench and the tests: a local distribution registry (:mod:`.registry`)
and images built in memory and pushed over the registry API (:mod:`.images`).

Not part of the core: ``ocimirror`` never imports this package. A plain registry needs nothing beyond the
core's dependencies; htpasswd and TLS registries (tests only) need ``bcrypt`` and ``cryptography`` from
the ``test`` extra, and say so when they are missing.
"""
