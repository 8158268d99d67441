"""Cluster mode on NATS JetStream (docs/cluster.md).

Only :mod:`.handlers` is imported by a single-node server; every module that
imports ``nats`` is loaded by :mod:`xtsdb.server.app` only when ``--cluster``
is set.
"""
