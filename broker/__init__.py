"""The adapters between a node and the outside: CURVE keys and sockets, Redis, accounts."""
