"""The node's BFD engine: a BFD-only BIRD 2 process the agent supervises, its configuration, its
control socket and what it reports (see the README's "BFD" section for why BIRD)."""
