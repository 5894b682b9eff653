"""`python -m calico_bgp`: the CLI without the console-script wrapper (tests, namespaces)."""
from calico_bgp.cli import main

main(prog_name="calico-bgp")
