"""The chaos campaign (issue 11): fault injection against real clusters, and checkers that judge
the outcome from the clients' side, independent of pgha's own view.

``links`` (loopback TCP links that can be cut, delayed or flapped), ``dcs`` (the DCS under test
and its own faults), ``cluster`` (a LocalCluster whose every network path runs through links),
``checkers`` (writers, split-brain probe, lost-write and divergence checks), ``faults`` (the
catalogue and the seeded scheduler), ``campaign`` (the runner and its report). The short seeded
form runs in ``tests/chaos/test_campaign.py``, the long form in ``benchmarks/chaos.py``.
"""
