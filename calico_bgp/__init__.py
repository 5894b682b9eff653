"""calico-bgp: a BGP routing control plane for bare-metal racks."""
