package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// root is deploy/kubernetes; repo is the repository.
const (
	root = ".."
	repo = "../../.."
)

// gather is the binary's flags and the source's drains, loaded once by TestMain.
var gather *Gather

// TestMain loads what the manifests are checked against: the flags of the gather binary named by
// GATHER_BIN (make lint passes .bin/gather), or of one built from the repository, and the drain
// deadlines in cmd/gather.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		bin := os.Getenv("GATHER_BIN")
		if bin == "" {
			dir, err := os.MkdirTemp("", "gather-k8s-check-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer func() { _ = os.RemoveAll(dir) }() // a leftover temporary binary is harmless
			bin = filepath.Join(dir, "gather")
			build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/gather")
			build.Dir, build.Stdout, build.Stderr = repo, os.Stderr, os.Stderr
			if err := build.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "building gather (set GATHER_BIN to use a built one):", err)
				return 1
			}
		}
		var err error
		if gather, err = LoadGather(ctx, bin, filepath.Join(repo, "cmd", "gather")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// render renders and decodes dir, failing the test on any error.
func render(t *testing.T, dir string) *Cluster {
	t.Helper()
	docs, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(docs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOverlays(t *testing.T) {
	dirs, err := Overlays(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			if err := Check(render(t, dir), gather); err != nil {
				t.Errorf("%s:\n%v", dir, err)
			}
		})
	}
}

// TestBase renders and decodes the base alone; it is not deployable (its proxies know no shard),
// so only the overlays are checked.
func TestBase(t *testing.T) {
	t.Parallel()
	c := render(t, filepath.Join(root, "base"))
	if got := len(c.StatefulSets); got != 4 {
		t.Errorf("base has %d StatefulSets, want 4 (one per partition)", got)
	}
}

func TestDrainFromSource(t *testing.T) {
	for sub, want := range map[string]time.Duration{"proxy": 10 * time.Second, "shard": 5 * time.Second} {
		if got := gather.Drain[sub]; got != want {
			t.Errorf("drain of gather %s = %v, want %v: if cmd/gather changed it, change terminationGracePeriodSeconds and this test", sub, got, want)
		}
	}
	if gather.TracingFlush <= 0 {
		t.Errorf("tracing flush = %v, want > 0", gather.TracingFlush)
	}
}

func TestDecodeIsStrict(t *testing.T) {
	tests := map[string]string{
		"unknown field": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n",
		"wrong type":    "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: seven}]}\n",
		"unknown kind":  "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n",
		"duplicate":     "apiVersion: v1\nkind: Service\nmetadata: {name: x, name: y}\n",
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode([][]byte{[]byte(doc)}); err == nil {
				t.Errorf("Decode(%q) = nil error, want one", doc)
			}
		})
	}
}

// Accessors for the mutations below.
func proxy(c *Cluster) *appsv1.Deployment { return c.Deployments[0] }

func proxyC(c *Cluster) *corev1.Container { return &proxy(c).Spec.Template.Spec.Containers[0] }

func shard(c *Cluster, i int) *appsv1.StatefulSet {
	for _, s := range c.StatefulSets {
		if s.Name == fmt.Sprintf("gather-shard-%d", i) {
			return s
		}
	}
	panic(fmt.Sprintf("no gather-shard-%d", i))
}

func shardC(c *Cluster, i int) *corev1.Container {
	return &shard(c, i).Spec.Template.Spec.Containers[0]
}

func service(c *Cluster, name string) *corev1.Service {
	for _, s := range c.Services {
		if s.Name == name {
			return s
		}
	}
	panic("no Service " + name)
}

// replaceArg replaces the arg that starts with prefix (dropping it if with is "").
func replaceArg(c *corev1.Container, prefix, with string) {
	i := slices.IndexFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, prefix) })
	if i < 0 {
		panic("no arg " + prefix)
	}
	if with == "" {
		c.Args = slices.Delete(c.Args, i, i+1)
		return
	}
	c.Args[i] = with
}

// TestCheckCatches breaks a valid rendering in each way a reviewer would look for and wants
// Check to say so: each case is a check shown to fail without what it checks.
func TestCheckCatches(t *testing.T) {
	tests := []struct {
		name, overlay, want string
		mutate              func(c *Cluster)
	}{
		{"unknown flag", "dns", "has no flag --shard-timout", func(c *Cluster) {
			proxyC(c).Args = append(proxyC(c).Args, "--shard-timout=1s")
		}},
		{"flag without its value", "dns", "takes a value", func(c *Cluster) {
			replaceArg(proxyC(c), "--max-in-flight=", "--max-in-flight")
		}},
		{"positional arg", "dns", "write every flag as --name=value", func(c *Cluster) {
			proxyC(c).Args = append(proxyC(c).Args, "-pprof")
		}},
		{"unknown subcommand", "dns", "not a subcommand", func(c *Cluster) { proxyC(c).Args[0] = "serve" }},
		{"undefined env reference", "dns", "not defined in env", func(c *Cluster) {
			replaceArg(proxyC(c), "--shard=shard-0=", "--shard=shard-0=dns:///gather-shard-0.$(POD_NAMESPAC).svc.cluster.local:7071")
		}},
		{"grpc probe on the admin port", "dns", "gRPC health is served on the --listen port", func(c *Cluster) {
			proxyC(c).LivenessProbe.GRPC.Port = 9090
		}},
		{"http probe on an undeclared port", "dns", "not a declared containerPort", func(c *Cluster) {
			proxyC(c).ReadinessProbe.HTTPGet.Port = intstr.FromString("metrics")
		}},
		{"http probe on a path gather does not serve", "dns", "serves /healthz, /readyz and /readyz?partial=1", func(c *Cluster) {
			proxyC(c).ReadinessProbe.HTTPGet.Path = "/ready"
		}},
		{"listen port not the declared one", "dns", "declare containerPort 7000 named grpc", func(c *Cluster) {
			replaceArg(proxyC(c), "--listen=", "--listen=:7000")
		}},
		{"admin on loopback", "dns", "give --admin=:PORT", func(c *Cluster) { replaceArg(shardC(c, 2), "--admin=", "") }},
		{"PDB selects no workload", "dns", "selects the pods of 0 workloads", func(c *Cluster) {
			c.PDBs[0].Spec.Selector.MatchLabels["app.kubernetes.io/component"] = "proxies"
		}},
		{"PDB blocks node drains", "dns", "lets no pod be evicted", func(c *Cluster) {
			c.PDBs[0].Spec.MinAvailable = ptr.To(intstr.FromInt32(2))
		}},
		{"Service selects no pods", "dns", "selects no pods", func(c *Cluster) {
			service(c, "gather-proxy").Spec.Selector["app.kubernetes.io/name"] = "gatherer"
		}},
		{"Service targets an undeclared port", "dns", "do not declare", func(c *Cluster) {
			service(c, "gather-proxy").Spec.Ports[1].TargetPort = intstr.FromString("metrics")
		}},
		{"grace shorter than the drain", "dns", "kill it mid-drain", func(c *Cluster) {
			proxy(c).Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](15)
		}},
		{"grace far longer than the drain", "dns", "lower it to match the drain", func(c *Cluster) {
			shard(c, 0).Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](60)
		}},
		{"tracing adds the span flush", "dns", "span flushing 5s", func(c *Cluster) {
			proxyC(c).Env = append(proxyC(c).Env, corev1.EnvVar{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://jaeger:4317"})
		}},
		{"no preStop", "dns", "no preStop sleep", func(c *Cluster) { shardC(c, 1).Lifecycle = nil }},
		{"exec preStop", "dns", "use the sleep action", func(c *Cluster) {
			proxyC(c).Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "5"}}}
		}},
		{"writable root filesystem", "dns", "readOnlyRootFilesystem", func(c *Cluster) {
			proxyC(c).SecurityContext.ReadOnlyRootFilesystem = ptr.To(false)
		}},
		{"may run as root", "dns", "runAsNonRoot", func(c *Cluster) {
			shard(c, 0).Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
		}},
		{"service links", "dns", "enableServiceLinks", func(c *Cluster) {
			proxy(c).Spec.Template.Spec.EnableServiceLinks = nil
		}},
		{"no memory limit", "dns", "resources.limits.memory", func(c *Cluster) {
			delete(shardC(c, 3).Resources.Limits, corev1.ResourceMemory)
		}},
		{"GOMEMLIMIT above the limit", "dns", "is not below the memory limit", func(c *Cluster) {
			proxyC(c).Env[0].Value = "300MiB"
		}},
		{"a partition missing from the proxy", "dns", "no --shard=shard-3=dns:///", func(c *Cluster) {
			replaceArg(proxyC(c), "--shard=shard-3=", "")
		}},
		{"a shard name on another partition's Service", "dns", "partition 1 is served by", func(c *Cluster) {
			replaceArg(proxyC(c), "--shard=shard-1=", "--shard=shard-1=dns:///gather-shard-2.$(POD_NAMESPACE).svc.cluster.local:7071")
		}},
		{"a shard on a port its Service lacks", "dns", "has no port 7070", func(c *Cluster) {
			replaceArg(proxyC(c), "--shard=shard-1=", "--shard=shard-1=dns:///gather-shard-1.$(POD_NAMESPACE).svc.cluster.local:7070")
		}},
		{"a headless Service over every partition", "dns", "also selects the pods of StatefulSet gather/gather-shard-1", func(c *Cluster) {
			delete(service(c, "gather-shard-0").Spec.Selector, "gather/partition")
		}},
		{"two StatefulSets on one partition", "dns", "no StatefulSet serves partition 3", func(c *Cluster) {
			replaceArg(shardC(c, 3), "--partition=", "--partition=2/4")
		}},
		{"partitions of different counts", "dns", "every shard needs the same N", func(c *Cluster) {
			replaceArg(shardC(c, 3), "--partition=", "--partition=3/5")
		}},
		{"a shard that does not register", "etcd", "no --register", func(c *Cluster) {
			replaceArg(shardC(c, 2), "--register=", "")
		}},
		{"a shard registering elsewhere", "etcd", "is not where", func(c *Cluster) {
			replaceArg(shardC(c, 2), "--register=", "--register=etcd://etcd:2379/other")
		}},
		{"advertising another port", "etcd", "not the --listen port", func(c *Cluster) {
			replaceArg(shardC(c, 0), "--advertise=", "--advertise=$(POD_IP):7000")
		}},
		{"a ConfigMap key that does not exist", "etcd", "no ConfigMap", func(c *Cluster) {
			proxyC(c).Env[len(proxyC(c).Env)-1].ValueFrom.ConfigMapKeyRef.Key = "ETCD"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := render(t, filepath.Join(root, "overlays", tt.overlay))
			if err := Check(c, gather); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			tt.mutate(c)
			err := Check(c, gather)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestPendingFlags: a flag announced for the binary is accepted while the binary lacks it, and
// reported for deletion from pendingFlags once it has it.
func TestPendingFlags(t *testing.T) {
	t.Parallel()
	c := render(t, filepath.Join(root, "overlays", "etcd"))
	g := *gather
	g.Pending = map[string][]string{"proxy": {"discover"}}
	g.Flags = map[string]map[string]bool{"shard": gather.Flags["shard"], "proxy": {"discover": false}}
	for name, isBool := range gather.Flags["proxy"] {
		g.Flags["proxy"][name] = isBool
	}
	err := Check(c, &g)
	if err == nil || !strings.Contains(err.Error(), "delete it from pendingFlags") {
		t.Errorf("Check with --discover in the binary = %v, want it to say to delete it from pendingFlags", err)
	}
}

// TestRun: go run . OVERLAY prints the rendering as one YAML stream, and an unknown overlay is an
// error.
func TestRun(t *testing.T) {
	t.Parallel()
	var out, errs strings.Builder
	if err := run([]string{"etcd"}, &out, &errs); err != nil {
		t.Fatalf("run etcd: %v\n%s", err, errs.String())
	}
	for _, want := range []string{"kind: StatefulSet", "\n---\n", "--discover=$(ETCD_URL)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run etcd printed no %q", want)
		}
	}
	if err := run([]string{"nosuch"}, &out, &errs); err == nil {
		t.Error("run nosuch = nil error, want one")
	}
}
