"""The lab: containerlab topologies realised on network namespaces, checked, broken and repaired.

    clab.py      pure: topology files -> values (containerlab inheritance), what cannot be realised
    execs.py     pure: a node's exec commands -> shell steps and the agent start the lab owns
    expectations.py  pure: what `lab check` expects of observed sessions, kernel routes and pings
    net.py       namespaces, veth pairs, bridges, processes (recorded in a ledger first), wait_for:
                 the one namespace/process helper of the lab, the tests and the benchmarks
    bird.py      BIRD 2 in a namespace through birdc: the one BIRD driver (configs, sessions, routes)
    routers.py   FRR, BIRD 2 and GoBGP from Debian in a namespace, with a topology's bound configs
    cluster.py   node agents on one L2 segment with workloads: the e2e tests' and benchmarks' cluster
    runtime.py   `lab up` / `lab down`: etcd, resources, routers, exec, agents, workloads
    observe.py   reading a running lab: statuses in etcd, kernel routes, router sessions, pings
    check.py     `lab check`: observe + decide, retried until a timeout
    chaos.py     `lab chaos`: faults with lost pings, re-convergence times and routes lost
    state.py     the run directory's state document
    workload.py  a workload namespace wired to its node like Calico's CNI does
    etcd.py      etcd for the tests; demo.py the README's main command
"""
