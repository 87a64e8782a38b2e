"""charpack test suite (tiers: unit, nodes, server, gpu; see tests/README.md)."""
