// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-or-later
//
// calico-bgp policy filter at XDP: the source address of every IPv4/IPv6 packet is looked up in a
// longest-prefix-match trie whose value is the compiled verdict of the most specific prefix (see
// dataplane/filters/rules.py for the semantics, which are decided there, not here). The program only
// applies a verdict:
//
//   no entry                          -> pass, not counted
//   (proto, dport) in the exception   -> pass, counted on the exception's Allow rule
//   set of the entry (or proto, any)
//   action ALLOW                      -> pass, counted on the Allow rule
//   action PASS                       -> pass, not counted (only exceptions, no covering rule)
//   action DENY, failsafe tcp/udp     -> pass, counted on slot 0 (failsafe)
//   action DENY                       -> drop, counted on the Deny rule
//
// Parsing limits (documented in the README, "Policy filters"): Ethernet without VLAN tags (tagged
// frames pass); IPv4 options are skipped with IHL; non-first IPv4/IPv6 fragments carry no port;
// at most MAX_EXT_HDRS IPv6 extension headers (hop-by-hop, routing, destination options, fragment)
// are walked; ICMPv6 neighbour discovery always passes (as ARP does for IPv4).
//
// The loader (dataplane/filters/xdp/loader.py) opens this object with libbpf, creates the maps or
// re-uses the pinned ones, and pins the program; `ip link set dev X xdp obj filter.o sec xdp` loads
// it as well (with maps of its own).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_EXT_HDRS 3
#define MAX_SLOTS 4096          // counter slots: 0 is failsafe, 1.. are rules
#define MAX_PREFIXES 65536      // per family
#define MAX_EXCEPTIONS 65536    // (set, proto, port) keys, port ranges expanded
#define FAILSAFE_WORDS 2048     // 1024 u64 words of port bits for tcp, 1024 for udp

#define ACTION_PASS 0
#define ACTION_ALLOW 1
#define ACTION_DENY 2

#define NO_PORT 0xffffffff

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct verdict {
	__u32 slot;      // counter slot of the rule that decides when no exception matches
	__u32 exc_set;   // 0: no exceptions; else the id used in exception keys
	__u8 action;     // ACTION_*
	__u8 pad[3];
};

struct exc_key {
	__u32 exc_set;
	__u8 proto;
	__u8 any_port;   // 1: the Allow names a protocol without ports
	__u16 port;      // host byte order; 0 when any_port
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

// BTF-defined maps (clang -g emits the BTF): libbpf and iproute2 read them from the ".maps" section.
// The loader pins them per interface and re-uses them across restarts and program upgrades, so their
// names, key and value layouts are an ABI (dataplane/filters/xdp/enforce.py encodes them).
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, struct verdict);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cb_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v6_key);
	__type(value, struct verdict);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cb_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct exc_key);
	__type(value, __u32);
	__uint(max_entries, MAX_EXCEPTIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} cb_exc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, FAILSAFE_WORDS);
} cb_failsafe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, MAX_SLOTS);
} cb_counters SEC(".maps");

struct ports {
	__be16 source;
	__be16 dest;
};

struct ext_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 frag_off;    // only meaningful for the fragment header
};

static __always_inline void count(__u32 slot, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&cb_counters, &slot);
	if (c) {
		c->packets += 1;    // per-CPU: no atomics needed
		c->bytes += bytes;
	}
}

static __always_inline int is_failsafe(__u8 proto, __u32 port)
{
	if (port == NO_PORT || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
		return 0;
	__u32 idx = (proto == IPPROTO_UDP ? 1024 : 0) + (port >> 6);
	__u64 *word = bpf_map_lookup_elem(&cb_failsafe, &idx);
	return word && (*word & (1ULL << (port & 63)));
}

static __always_inline int apply(struct verdict *v, __u8 proto, __u32 port, __u64 bytes)
{
	if (v->exc_set) {
		struct exc_key k = { .exc_set = v->exc_set, .proto = proto };
		__u32 *slot;
		if (port != NO_PORT) {
			k.port = (__u16)port;
			slot = bpf_map_lookup_elem(&cb_exc, &k);
			if (slot) {
				count(*slot, bytes);
				return XDP_PASS;
			}
		}
		k.any_port = 1;
		k.port = 0;
		slot = bpf_map_lookup_elem(&cb_exc, &k);
		if (slot) {
			count(*slot, bytes);
			return XDP_PASS;
		}
	}
	if (v->action == ACTION_DENY) {
		if (is_failsafe(proto, port)) {
			count(0, bytes);
			return XDP_PASS;
		}
		count(v->slot, bytes);
		return XDP_DROP;
	}
	if (v->action == ACTION_ALLOW)
		count(v->slot, bytes);
	return XDP_PASS;
}

static __always_inline __u32 dest_port(void *l4, void *end, __u8 proto)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return NO_PORT;    // the three keep the destination port at offset 2
	struct ports *p = l4;
	if ((void *)(p + 1) > end)
		return NO_PORT;
	return bpf_ntohs(p->dest);
}

// The program is named cbf_<build id> (15 characters at most, the kernel's limit): the loader tells its
// own programs by the prefix and another build by the id, which the Makefile derives from its inputs.
#ifndef BUILD_ID
#define BUILD_ID dev
#endif
#define PROG_NAME_(id) cbf_##id
#define PROG_NAME(id) PROG_NAME_(id)

SEC("xdp")
int PROG_NAME(BUILD_ID)(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__u64 bytes = (__u64)(end - (void *)(eth + 1));    // L3 length, as nft/iptables count it

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		struct lpm_v4_key key = { .prefixlen = 32 };
		__builtin_memcpy(key.addr, &ip->saddr, 4);
		struct verdict *v = bpf_map_lookup_elem(&cb_v4, &key);
		if (!v)
			return XDP_PASS;
		__u32 port = NO_PORT;
		__u32 ihl = ip->ihl * 4;
		// a non-first fragment has no transport header
		if (ihl >= sizeof(*ip) && !(ip->frag_off & bpf_htons(0x1fff)))
			port = dest_port((void *)ip + ihl, end, ip->protocol);
		return apply(v, ip->protocol, port, bytes);
	}

	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		__u8 nh = ip6->nexthdr;
		void *p = ip6 + 1;
		int no_l4 = 0;
#pragma unroll
		for (int i = 0; i < MAX_EXT_HDRS; i++) {
			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
			    nh != IPPROTO_FRAGMENT)
				break;
			struct ext_hdr *h = p;
			if ((void *)(h + 1) > end) {
				no_l4 = 1;
				break;
			}
			if (nh == IPPROTO_FRAGMENT) {
				if (h->frag_off & bpf_htons(0xfff8))
					no_l4 = 1;    // non-first fragment
				nh = h->nexthdr;
				p += 8;
				if (no_l4)
					break;
			} else {
				nh = h->nexthdr;
				p += (h->hdrlen + 1) * 8;
			}
		}
		if (nh == IPPROTO_ICMPV6 && !no_l4) {
			__u8 *type = p;
			if ((void *)(type + 1) <= end && *type >= 133 && *type <= 137)
				return XDP_PASS;    // neighbour discovery, as ARP for IPv4
		}
		struct lpm_v6_key key = { .prefixlen = 128 };
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		struct verdict *v = bpf_map_lookup_elem(&cb_v6, &key);
		if (!v)
			return XDP_PASS;
		__u32 port = no_l4 ? NO_PORT : dest_port(p, end, nh);
		return apply(v, nh, port, bytes);
	}

	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
