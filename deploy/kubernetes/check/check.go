package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// maxSlack is the most terminationGracePeriodSeconds may exceed preStop + drain by: beyond it,
// the grace no longer says how long the process drains, and a stuck pod lingers.
const maxSlack = 10 * time.Second

// workload is a Deployment or StatefulSet, reduced to what the checks need.
type workload struct {
	kind, namespace, name string
	replicas              int32
	selector              *metav1.LabelSelector
	pod                   *corev1.PodTemplateSpec
	serviceName           string // StatefulSet only
}

func (w workload) String() string { return w.kind + " " + w.namespace + "/" + w.name }

// selects reports whether sel selects the pods of w (same namespace, labels match).
func selects(namespace string, sel *metav1.LabelSelector, w workload) (bool, error) {
	if namespace != w.namespace {
		return false, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return !s.Empty() && s.Matches(labels.Set(w.pod.Labels)), nil
}

// Check returns every way in which c disagrees with gather or with itself, each error naming
// the object and what to fix. c is one overlay's rendering: a deployable whole.
func Check(c *Cluster, g *Gather) error {
	ck := &checker{c: c, g: g}
	for _, d := range c.Deployments {
		ck.workloads = append(ck.workloads, workload{"Deployment", d.Namespace, d.Name, replicas(d.Spec.Replicas), d.Spec.Selector, &d.Spec.Template, ""})
	}
	for _, s := range c.StatefulSets {
		ck.workloads = append(ck.workloads, workload{"StatefulSet", s.Namespace, s.Name, replicas(s.Spec.Replicas), s.Spec.Selector, &s.Spec.Template, s.Spec.ServiceName})
	}
	for _, w := range ck.workloads {
		ck.workload(w)
	}
	ck.services()
	ck.pdbs()
	ck.topology()
	return errors.Join(ck.errs...)
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

type checker struct {
	c         *Cluster
	g         *Gather
	workloads []workload
	// gathers are the gather containers, by workload, with their parsed flags.
	gathers []gatherContainer
	errs    []error
}

// gatherContainer is a container running the gather image.
type gatherContainer struct {
	w     workload
	c     *corev1.Container
	sub   string
	flags map[string]string // --name=value, by name; bools map to ""
}

func (ck *checker) errorf(format string, args ...any) {
	ck.errs = append(ck.errs, fmt.Errorf(format, args...))
}

// isGather reports whether image is gather's, whatever its registry or tag.
func isGather(image string) bool {
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return name == "gather" || strings.HasSuffix(name, "/gather")
}

func (ck *checker) workload(w workload) {
	if ok, err := selects(w.namespace, w.selector, w); err != nil || !ok {
		ck.errorf("%s: its selector does not select its own pod template's labels %v (%v)", w, w.pod.Labels, err)
	}
	for _, o := range ck.workloads {
		if o != w {
			if ok, _ := selects(w.namespace, w.selector, o); ok {
				ck.errorf("%s: its selector also selects the pods of %s: give each its own label (such as gather/partition)", w, o)
			}
		}
	}
	spec := &w.pod.Spec
	gatherPod := false
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if !isGather(c.Image) {
			continue
		}
		gatherPod = true
		ck.container(w, c)
	}
	if !gatherPod {
		return
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		ck.errorf("%s: set enableServiceLinks: false: Service links put GATHER_*_SERVICE_HOST and the like in the environment, where gather reads its GATHER_<KEY> settings", w)
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		ck.errorf("%s: set securityContext.runAsNonRoot: true", w)
	}
}

// envVar matches a $(NAME) reference, which Kubernetes expands from the container's env
// ($$(NAME) is a literal).
var envVar = regexp.MustCompile(`\$?\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// undefinedRefs returns the $(NAME) references in s that defined does not hold: Kubernetes
// leaves those as they are, silently.
func undefinedRefs(s string, defined map[string]bool) []string {
	var out []string
	for _, m := range envVar.FindAllStringSubmatch(s, -1) {
		if !strings.HasPrefix(m[0], "$$") && !defined[m[1]] {
			out = append(out, m[0])
		}
	}
	return out
}

func (ck *checker) container(w workload, c *corev1.Container) {
	at := fmt.Sprintf("%s container %s", w, c.Name)
	defined := map[string]bool{}
	for _, e := range c.Env {
		if bad := undefinedRefs(e.Value, defined); len(bad) > 0 {
			ck.errorf("%s: env %s refers to %s, not defined before it in env", at, e.Name, strings.Join(bad, ", "))
		}
		if vf := e.ValueFrom; vf != nil && vf.ConfigMapKeyRef != nil && !ck.configMapHas(w.namespace, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key) {
			ck.errorf("%s: env %s: no ConfigMap %s with key %s in the rendering", at, e.Name, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
		}
		defined[e.Name] = true
	}
	if len(c.Command) > 0 {
		ck.errorf("%s: command %q: leave it unset (the image's entrypoint is gather) and put the subcommand first in args", at, c.Command)
	}
	if len(c.Args) == 0 {
		ck.errorf("%s: no args: the first must be a gather subcommand, one of %v", at, slices.Sorted(maps.Keys(ck.g.Flags)))
		return
	}
	gc := gatherContainer{w: w, c: c, sub: c.Args[0], flags: map[string]string{}}
	known, ok := ck.g.Flags[gc.sub]
	if !ok {
		ck.errorf("%s: args[0] %q is not a subcommand the check knows, one of %v", at, gc.sub, slices.Sorted(maps.Keys(ck.g.Flags)))
		return
	}
	for _, arg := range c.Args[1:] {
		if bad := undefinedRefs(arg, defined); len(bad) > 0 {
			ck.errorf("%s: arg %q refers to %s, not defined in env: Kubernetes would pass it as it is", at, arg, strings.Join(bad, ", "))
		}
		name, value, hasValue, ok := flagArg(arg)
		if !ok {
			ck.errorf("%s: arg %q: write every flag as --name=value (or --name for a bool)", at, arg)
			continue
		}
		isBool, exists := known[name]
		switch {
		case exists && slices.Contains(ck.g.Pending[gc.sub], name):
			ck.errorf("%s: gather %s now has --%s: delete it from pendingFlags in deploy/kubernetes/check/gather.go", at, gc.sub, name)
		case !exists && slices.Contains(ck.g.Pending[gc.sub], name):
			// announced, not in this binary yet
		case !exists:
			ck.errorf("%s: arg %q: gather %s has no flag --%s (gather %s -h lists them)", at, arg, gc.sub, name, gc.sub)
			continue
		case !isBool && !hasValue:
			ck.errorf("%s: arg %q: --%s takes a value: write --%s=VALUE", at, arg, name, name)
		}
		if _, dup := gc.flags[name]; dup && name != "shard" {
			ck.errorf("%s: --%s given twice", at, name)
		}
		if name == "shard" {
			value = gc.flags[name] + value + "\n" // repeated: one per line
		}
		gc.flags[name] = value
	}
	ck.gathers = append(ck.gathers, gc)
	ck.ports(at, gc)
	ck.drain(at, gc)
	ck.hardening(at, c)
	ck.resources(at, c)
}

// portOf returns the port of a --listen or --admin address.
func portOf(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	return int32(n), err
}

// ports: the container declares grpc (the --listen port) and admin (the --admin port), and every
// probe points at a declared port that serves what it asks: gRPC health on the --listen port,
// HTTP on the admin port.
func (ck *checker) ports(at string, gc gatherContainer) {
	declared := map[string]int32{}
	for _, p := range gc.c.Ports {
		declared[p.Name] = p.ContainerPort
	}
	want := map[string]string{"grpc": "listen", "admin": "admin"}
	for portName, flagName := range want {
		addr, ok := gc.flags[flagName]
		if !ok {
			ck.errorf("%s: give --%s=:PORT: the default is loopback, which neither the kubelet nor a Service reaches", at, flagName)
			continue
		}
		n, err := portOf(addr)
		if err != nil {
			ck.errorf("%s: --%s=%s: %v", at, flagName, addr, err)
			continue
		}
		if p, ok := declared[portName]; !ok || p != n {
			ck.errorf("%s: declare containerPort %d named %s (the --%s port); ports are %v", at, n, portName, flagName, declared)
		}
	}
	resolve := func(p intstr.IntOrString) (int32, bool) {
		if p.Type == intstr.String {
			n, ok := declared[p.StrVal]
			return n, ok
		}
		return p.IntVal, slices.Contains(slices.Collect(maps.Values(declared)), p.IntVal)
	}
	probes := map[string]*corev1.Probe{"startupProbe": gc.c.StartupProbe, "readinessProbe": gc.c.ReadinessProbe, "livenessProbe": gc.c.LivenessProbe}
	for _, name := range []string{"livenessProbe", "readinessProbe"} {
		if probes[name] == nil {
			ck.errorf("%s: no %s", at, name)
		}
	}
	for name, pr := range probes {
		if pr == nil {
			continue
		}
		switch {
		case pr.GRPC != nil:
			if pr.GRPC.Port != declared["grpc"] {
				ck.errorf("%s: %s: grpc port %d: gRPC health is served on the --listen port, %d", at, name, pr.GRPC.Port, declared["grpc"])
			}
		case pr.HTTPGet != nil:
			n, ok := resolve(pr.HTTPGet.Port)
			if !ok {
				ck.errorf("%s: %s: port %s is not a declared containerPort", at, name, pr.HTTPGet.Port.String())
			} else if n != declared["admin"] {
				ck.errorf("%s: %s: port %s: HTTP (/healthz, /readyz) is served on the admin port, %d", at, name, pr.HTTPGet.Port.String(), declared["admin"])
			}
			if !slices.Contains([]string{"/healthz", "/readyz", "/readyz?partial=1"}, pr.HTTPGet.Path) {
				ck.errorf("%s: %s: path %q: gather's admin port serves /healthz, /readyz and /readyz?partial=1", at, name, pr.HTTPGet.Path)
			}
		default:
			ck.errorf("%s: %s: use a grpc probe (the --listen port) or an httpGet of /healthz or /readyz (the admin port); the image has no shell for exec", at, name)
		}
	}
}

// drain: preStop sleep + gather's drain (+ span flushing when tracing is on) must fit in
// terminationGracePeriodSeconds, which may exceed it by at most maxSlack.
func (ck *checker) drain(at string, gc gatherContainer) {
	var sleep time.Duration
	if ps := gc.c.Lifecycle; ps != nil && ps.PreStop != nil {
		switch {
		case ps.PreStop.Sleep != nil:
			sleep = time.Duration(ps.PreStop.Sleep.Seconds) * time.Second
		default:
			ck.errorf("%s: preStop: use the sleep action: the image has no shell or sleep for exec, and gather serves no drain endpoint", at)
		}
	} else {
		ck.errorf("%s: no preStop sleep: SIGTERM would arrive while kube-proxy and resolvers still send the pod new work", at)
	}
	need := sleep + ck.g.Drain[gc.sub]
	why := fmt.Sprintf("preStop %v + gather %s's drain %v", sleep, gc.sub, ck.g.Drain[gc.sub])
	for _, e := range gc.c.Env {
		if e.Name == "OTEL_EXPORTER_OTLP_ENDPOINT" || e.Name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" {
			need += ck.g.TracingFlush
			why += fmt.Sprintf(" + span flushing %v", ck.g.TracingFlush)
			break
		}
	}
	gp := ck.gracePeriod(gc.w)
	if gp <= need {
		ck.errorf("%s: terminationGracePeriodSeconds %d is not more than %s = %v: the kubelet would kill it mid-drain",
			at, int(gp.Seconds()), why, need)
	} else if gp > need+maxSlack {
		ck.errorf("%s: terminationGracePeriodSeconds %d is more than %s = %v by over %v: lower it to match the drain",
			at, int(gp.Seconds()), why, need, maxSlack)
	}
}

func (ck *checker) gracePeriod(w workload) time.Duration {
	gp := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if w.pod.Spec.TerminationGracePeriodSeconds != nil {
		gp = *w.pod.Spec.TerminationGracePeriodSeconds
	}
	return time.Duration(gp) * time.Second
}

// hardening: read-only root filesystem, no privilege escalation, no capabilities.
func (ck *checker) hardening(at string, c *corev1.Container) {
	sc := c.SecurityContext
	if sc == nil {
		ck.errorf("%s: no securityContext: set readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities.drop: [ALL]", at)
		return
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		ck.errorf("%s: set securityContext.readOnlyRootFilesystem: true (gather writes only to --data-dir)", at)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		ck.errorf("%s: set securityContext.allowPrivilegeEscalation: false", at)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		ck.errorf("%s: set securityContext.capabilities.drop: [ALL]", at)
	}
}

// resources: requests and limits of CPU and memory, requests within limits, and GOMEMLIMIT
// below the memory limit (else the GC never works harder before the OOM kill).
func (ck *checker) resources(at string, c *corev1.Container) {
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		if !okReq || !okLim {
			ck.errorf("%s: give resources.requests.%s and resources.limits.%s (docs/kubernetes.md derives them)", at, r, r)
			continue
		}
		if req.Cmp(lim) > 0 {
			ck.errorf("%s: resources.requests.%s %s is above the limit %s", at, r, req.String(), lim.String())
		}
	}
	lim, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		gml, err := goMemLimit(e.Value)
		if err != nil {
			ck.errorf("%s: GOMEMLIMIT=%q: %v", at, e.Value, err)
		} else if gml >= lim.Value() {
			ck.errorf("%s: GOMEMLIMIT=%s is not below the memory limit %s: leave room for what the Go runtime does not count", at, e.Value, lim.String())
		}
		return
	}
	ck.errorf("%s: set GOMEMLIMIT below the memory limit %s (about 80%%), so that the GC works harder before the pod is OOM-killed", at, lim.String())
}

// goMemLimit parses GOMEMLIMIT: bytes, with an optional B, KiB, MiB, GiB or TiB suffix.
func goMemLimit(v string) (int64, error) {
	for i, unit := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if num, ok := strings.CutSuffix(v, unit); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			return n << (10 * (4 - i)), err
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// services: every Service selects the pods of some workload, and each of its target ports is a
// port those pods declare.
func (ck *checker) services() {
	for _, s := range ck.c.Services {
		at := fmt.Sprintf("Service %s/%s", s.Namespace, s.Name)
		if len(s.Spec.Selector) == 0 {
			ck.errorf("%s: no selector", at)
			continue
		}
		sel := metav1.SetAsLabelSelector(s.Spec.Selector)
		var picked []workload
		for _, w := range ck.workloads {
			if ok, _ := selects(s.Namespace, sel, w); ok {
				picked = append(picked, w)
			}
		}
		if len(picked) == 0 {
			ck.errorf("%s: selector %v selects no pods of any Deployment or StatefulSet", at, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			for _, w := range picked {
				if !declaresPort(w.pod, p.TargetPort, p.Port) {
					ck.errorf("%s: port %s targets %s, which the pods of %s do not declare", at, p.Name, p.TargetPort.String(), w)
				}
			}
		}
	}
}

// declaresPort reports whether some container of pod declares target (a name or a number; a
// zero target means port, as in a Service).
func declaresPort(pod *corev1.PodTemplateSpec, target intstr.IntOrString, port int32) bool {
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			switch {
			case target.Type == intstr.String && target.StrVal != "":
				if cp.Name == target.StrVal {
					return true
				}
			case target.IntVal == 0:
				if cp.ContainerPort == port {
					return true
				}
			default:
				if cp.ContainerPort == target.IntVal {
					return true
				}
			}
		}
	}
	return false
}

// pdbs: every PodDisruptionBudget selects the pods of exactly one workload and allows at least
// one of them to be evicted (else a node drain waits forever).
func (ck *checker) pdbs() {
	for _, p := range ck.c.PDBs {
		at := fmt.Sprintf("PodDisruptionBudget %s/%s", p.Namespace, p.Name)
		var picked []workload
		for _, w := range ck.workloads {
			ok, err := selects(p.Namespace, p.Spec.Selector, w)
			if err != nil {
				ck.errorf("%s: selector: %v", at, err)
			}
			if ok {
				picked = append(picked, w)
			}
		}
		if len(picked) != 1 {
			ck.errorf("%s: selects the pods of %d workloads %v: it must select those of exactly one", at, len(picked), picked)
			continue
		}
		w := picked[0]
		switch {
		case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil:
			ck.errorf("%s: give minAvailable or maxUnavailable, not both", at)
		case p.Spec.MinAvailable != nil:
			n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, int(w.replicas), true)
			if err != nil || n >= int(w.replicas) {
				ck.errorf("%s: minAvailable %s of %d replicas of %s lets no pod be evicted: node drains would hang", at, p.Spec.MinAvailable.String(), w.replicas, w)
			}
		case p.Spec.MaxUnavailable != nil:
			n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, int(w.replicas), false)
			if err != nil || n < 1 {
				ck.errorf("%s: maxUnavailable %s of %d replicas of %s lets no pod be evicted: node drains would hang", at, p.Spec.MaxUnavailable.String(), w.replicas, w)
			}
		default:
			ck.errorf("%s: give minAvailable or maxUnavailable", at)
		}
	}
}

// headless returns the headless Service named name in namespace, if any.
func (ck *checker) headless(namespace, name string) *corev1.Service {
	for _, s := range ck.c.Services {
		if s.Namespace == namespace && s.Name == name && s.Spec.ClusterIP == corev1.ClusterIPNone {
			return s
		}
	}
	return nil
}

// configMapHas reports whether the rendering has ConfigMap name in namespace, with key.
func (ck *checker) configMapHas(namespace, name, key string) bool {
	for _, cm := range ck.c.ConfigMaps {
		if cm.Namespace == namespace && cm.Name == name {
			_, ok := cm.Data[key]
			return ok
		}
	}
	return false
}
