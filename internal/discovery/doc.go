// Package discovery finds the replicas of gather's shards, in etcd or in DNS.
//
// etcd: a shard registers its partition, replica id and address there (Register), and a proxy
// watches the registrations and builds a validated topology from them (Watcher).
//
// DNS: a replica entry of the configured topology may be a name, dns:///HOST:PORT, that stands
// for every A and AAAA address of HOST (a Kubernetes headless Service); a DNSSource resolves
// such entries, again every interval and when the proxy loses a replica's connection, and
// publishes the topology of addresses (docs/discovery-dns.md).
//
// The layout under a prefix P (from an etcd://HOST:PORT/P URL, ParseTarget) is one key per
// replica, P/<shard>/<replica-id>, whose value is a JSON Registration, attached to a lease the
// registrant keeps alive. A registrant that stops gracefully revokes its lease (the key goes at
// once); one that dies stops renewing it and etcd deletes the key when the lease's TTL runs out.
//
// The etcd client (go.etcd.io/etcd/client/v3) is used directly rather than through its gRPC
// resolver: that resolver drops endpoint metadata (the partition a replica serves) and its
// ResolveNow does nothing.
package discovery
