// Package cluster runs a gather cluster on one machine as separate processes on 127.0.0.1: an
// etcd server (etcdrun), index shard replicas that register in it (`gather shard --register`)
// and proxies that discover them (`gather proxy --discover`), for `gather cluster` and
// `make demo-cluster`.
//
// Every child runs in a process group of its own, so that the Ctrl-C a terminal sends to its
// foreground group reaches only the parent, which then stops the children in order: the proxies
// first (they drain their queries), then the shards (they revoke their etcd leases), then etcd.
// On Linux every child also gets SIGTERM when the parent dies (Pdeathsig), so that a killed
// parent leaves nothing behind either.
//
// A shard replica can be replaced while the cluster runs (Cluster.Replace): it is killed with
// SIGKILL, as a crashed machine would be, so its registration stays in etcd until its lease
// expires, and a new replica is started under a new id on a new port.
package cluster
