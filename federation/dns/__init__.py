"""The ``clusterset.local`` DNS zone, as each member cluster serves it.

Every agent serves its cluster's view of the zone from the imports it holds in memory
(the same state it writes to the ServiceImports), and the cluster's CoreDNS forwards
``clusterset.local`` to it. Pure, no I/O:

* :mod:`federation.dns.records`: one import in, its names and records out (the MCS DNS
  specification's record forms);
* :mod:`federation.dns.zone`: the zone of one cluster, and the answer to a question,
  with the reason for it;
* :mod:`federation.dns.wire`: a query's bytes in, the response's bytes out (errors,
  EDNS0, truncation).

The agent's UDP and TCP server is :mod:`agents.dns`.
"""
