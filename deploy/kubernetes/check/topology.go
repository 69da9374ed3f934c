package main

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// clusterDomain is the DNS domain the manifests assume (the Kubernetes default).
const clusterDomain = "svc.cluster.local"

// topology: the shards serve partitions 0 to N-1 of one N, each from one StatefulSet with a
// headless Service of its own, and every proxy finds every partition: by a --shard naming that
// Service with dns:///, or through the etcd prefix every shard registers under.
func (ck *checker) topology() {
	count := -1
	byIndex := map[int]gatherContainer{}
	for _, gc := range ck.gathers {
		if gc.sub != "shard" {
			continue
		}
		at := fmt.Sprintf("%s container %s", gc.w, gc.c.Name)
		i, n, err := parsePartition(gc.flags["partition"])
		if err != nil {
			ck.errorf("%s: --partition=%s: %v", at, gc.flags["partition"], err)
			continue
		}
		if count >= 0 && n != count {
			ck.errorf("%s: --partition=%s: other shards serve partitions of %d: every shard needs the same N", at, gc.flags["partition"], count)
		}
		count = n
		if prev, dup := byIndex[i]; dup {
			ck.errorf("%s: partition %d is also served by %s: one StatefulSet per partition", at, i, prev.w)
		}
		byIndex[i] = gc
		ck.governingService(at, gc)
	}
	for i := range max(count, 0) {
		if _, ok := byIndex[i]; !ok {
			ck.errorf("no StatefulSet serves partition %d of %d", i, count)
		}
	}
	for _, gc := range ck.gathers {
		if gc.sub != "proxy" {
			continue
		}
		at := fmt.Sprintf("%s container %s", gc.w, gc.c.Name)
		_, static := gc.flags["shard"]
		discover, etcd := gc.flags["discover"]
		switch {
		case static && etcd:
			ck.errorf("%s: give --shard or --discover, not both", at)
		case static:
			ck.dnsShards(at, gc, byIndex, count)
		case etcd:
			ck.etcdShards(at, gc, discover)
		default:
			ck.errorf("%s: the proxy knows no shard: give --shard=NAME=dns:///... for each partition, or --discover=etcd://...", at)
		}
	}
}

// parsePartition parses I/N.
func parsePartition(s string) (i, n int, err error) {
	a, b, ok := strings.Cut(s, "/")
	if ok {
		i, err = strconv.Atoi(a)
		if err == nil {
			n, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("want I/N with 0 <= I < N")
	}
	return i, n, nil
}

// governingService: a shard StatefulSet's serviceName is a headless Service that selects its
// pods and no other workload's, so that the Service's name resolves to one partition.
func (ck *checker) governingService(at string, gc gatherContainer) {
	if gc.w.kind != "StatefulSet" {
		ck.errorf("%s: run shards as a StatefulSet (stable pod names and DNS), not a %s", at, gc.w.kind)
		return
	}
	s := ck.headless(gc.w.namespace, gc.w.serviceName)
	if s == nil {
		ck.errorf("%s: serviceName %q is not a headless Service (clusterIP: None) in the rendering", at, gc.w.serviceName)
		return
	}
	sel := metav1.SetAsLabelSelector(s.Spec.Selector)
	for _, w := range ck.workloads {
		ok, _ := selects(s.Namespace, sel, w)
		switch {
		case w == gc.w && !ok:
			ck.errorf("%s: its headless Service %s does not select its pods", at, s.Name)
		case w != gc.w && ok:
			ck.errorf("%s: its headless Service %s also selects the pods of %s: its name would resolve to another partition too", at, s.Name, w)
		}
	}
}

// envSource describes where the container's env var name comes from, "" if it has none.
func envSource(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name != name {
			continue
		}
		switch vf := e.ValueFrom; {
		case vf == nil:
			return "value " + e.Value
		case vf.FieldRef != nil:
			return "fieldRef " + vf.FieldRef.FieldPath
		case vf.ConfigMapKeyRef != nil:
			return "configMap " + vf.ConfigMapKeyRef.Name + " key " + vf.ConfigMapKeyRef.Key
		default:
			return "valueFrom"
		}
	}
	return ""
}

// dnsShards: each --shard is NAME=dns:///SERVICE.NAMESPACE.svc.cluster.local:PORT, SERVICE the
// headless Service of the partition NAME (shard-I) names, PORT one of its ports, and every
// partition has one.
func (ck *checker) dnsShards(at string, gc gatherContainer, byIndex map[int]gatherContainer, count int) {
	seen := map[int]bool{}
	for _, spec := range strings.Split(strings.TrimSuffix(gc.flags["shard"], "\n"), "\n") {
		name, target, ok := strings.Cut(spec, "=")
		i, err := strconv.Atoi(strings.TrimPrefix(name, "shard-"))
		if !ok || !strings.HasPrefix(name, "shard-") || err != nil {
			ck.errorf("%s: --shard=%s: name shards shard-I, as the shards register in etcd", at, spec)
			continue
		}
		if seen[i] {
			ck.errorf("%s: --shard=%s: shard-%d given twice", at, spec, i)
		}
		seen[i] = true
		hostPort, ok := strings.CutPrefix(target, "dns:///")
		if !ok || strings.Contains(target, ",") {
			ck.errorf("%s: --shard=%s: give one dns:///SERVICE.NAMESPACE.%s:PORT target, the partition's headless Service", at, spec, clusterDomain)
			continue
		}
		host, port, err := net.SplitHostPort(hostPort)
		if err != nil {
			ck.errorf("%s: --shard=%s: %v", at, spec, err)
			continue
		}
		svcName, rest, _ := strings.Cut(host, ".")
		ns, domain, _ := strings.Cut(rest, ".")
		if domain != clusterDomain {
			ck.errorf("%s: --shard=%s: give the Service's full name, SERVICE.NAMESPACE.%s", at, spec, clusterDomain)
			continue
		}
		if ns == "$(POD_NAMESPACE)" {
			if src := envSource(gc.c, "POD_NAMESPACE"); src != "fieldRef metadata.namespace" {
				ck.errorf("%s: --shard=%s: POD_NAMESPACE must come from fieldRef metadata.namespace, not %q", at, spec, src)
			}
			ns = gc.w.namespace
		}
		s := ck.headless(ns, svcName)
		if s == nil {
			ck.errorf("%s: --shard=%s: no headless Service %s in namespace %s", at, spec, svcName, ns)
			continue
		}
		if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
			ck.errorf("%s: --shard=%s: Service %s has no port %s", at, spec, svcName, port)
		}
		if shard, ok := byIndex[i]; !ok {
			ck.errorf("%s: --shard=%s: no StatefulSet serves partition %d", at, spec, i)
		} else if shard.w.serviceName != svcName || shard.w.namespace != ns {
			ck.errorf("%s: --shard=%s: partition %d is served by %s, whose Service is %s", at, spec, i, shard.w, shard.w.serviceName)
		}
	}
	for i := range max(count, 0) {
		if !seen[i] {
			ck.errorf("%s: no --shard=shard-%d=dns:///...: partition %d of %d would be missing from every answer", at, i, i, count)
		}
	}
	for _, sh := range ck.gathers {
		if _, ok := sh.flags["register"]; ok && sh.sub == "shard" {
			ck.errorf("%s container %s: --register, but the proxies take their shards from --shard", sh.w, sh.c.Name)
		}
	}
}

// etcdShards: every shard registers where the proxy watches (the same URL from the same
// source) and advertises its pod IP on its --listen port.
func (ck *checker) etcdShards(at string, proxy gatherContainer, discover string) {
	proxySrc := urlSource(proxy.c, discover)
	for _, gc := range ck.gathers {
		if gc.sub != "shard" {
			continue
		}
		sat := fmt.Sprintf("%s container %s", gc.w, gc.c.Name)
		reg, ok := gc.flags["register"]
		if !ok {
			ck.errorf("%s: no --register=...: %s watches %s, where this shard never appears", sat, at, discover)
			continue
		}
		if src := urlSource(gc.c, reg); src != proxySrc {
			ck.errorf("%s: --register=%s (%s) is not where %s watches: --discover=%s (%s)", sat, reg, src, at, discover, proxySrc)
		}
		adv, ok := gc.flags["advertise"]
		if !ok {
			ck.errorf("%s: --register with a wildcard --listen needs --advertise=$(POD_IP):PORT", sat)
			continue
		}
		host, port, err := net.SplitHostPort(adv)
		lport, lerr := portOf(gc.flags["listen"])
		switch {
		case err != nil:
			ck.errorf("%s: --advertise=%s: %v", sat, adv, err)
		case host != "$(POD_IP)" || envSource(gc.c, "POD_IP") != "fieldRef status.podIP":
			ck.errorf("%s: --advertise=%s: advertise $(POD_IP), from fieldRef status.podIP", sat, adv)
		case lerr != nil || port != strconv.Itoa(int(lport)):
			ck.errorf("%s: --advertise=%s: the port is not the --listen port", sat, adv)
		}
	}
}

// urlSource says where a flag's value comes from: the env var it names whole, or itself.
func urlSource(c *corev1.Container, value string) string {
	if name, ok := strings.CutPrefix(value, "$("); ok && strings.HasSuffix(name, ")") {
		return envSource(c, strings.TrimSuffix(name, ")"))
	}
	return "value " + value
}
