"""Our own raw BGP speaker for tests: `message` encodes (and splits, parses) BGP-4 messages byte
for byte, malformed ones included; `session` drives one TCP session with them."""
