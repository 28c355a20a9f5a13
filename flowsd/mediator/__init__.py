"""The Flows mediator gRPC API, served by the daemon itself (wire-compatible with the public
reference client, simt-emlite 1.2.12).

* :mod:`flowsd.mediator.proto` — ``mediator.proto`` and its generated message module;
* :mod:`flowsd.mediator.auth` — client identity from the TLS certificate (CN, OU), roles and
  ESCO scopes, refusals;
* :mod:`flowsd.mediator.service` — the methods: each request becomes a command in the
  meter's own session (:mod:`flowsd.control.dispatch`), or a registry query;
* :mod:`flowsd.mediator.server` — the grpc.aio server: listen address, TLS, start and stop.
"""
