"""Policy filters at XDP: one program per interface, its maps written in place.

    filter.c    the program (BTF-defined maps), built by the Makefile into filter.o
    libbpf.py   object files opened, loaded and pinned through libbpf (libbpf.so.1) via ctypes
    loader.py   load or re-use the pins, attach; never touch an XDP program that is not ours
    enforce.py  a FilterSet encoded into the maps, in an order that leaves no window
    bpf.py      the bpf() system call for what follows loading: map elements, pins, object info
"""
