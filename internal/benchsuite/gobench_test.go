package benchsuite

import (
	"reflect"
	"strings"
	"testing"
)

const goTestOutput = `goos: linux
goarch: amd64
pkg: github.com/gatherproxy/gather/internal/merge
cpu: AMD EPYC
BenchmarkMerge/N=64/K=10/impl=losertree-2         	  663000	      1790 ns/op	       179.0 ns/hit	     544 B/op	       2 allocs/op
BenchmarkMerge/N=64/K=10/impl=sort-2              	   49000	     24368 ns/op	      2437 ns/hit	       0 B/op	       0 allocs/op
BenchmarkMerge/N=64/K=1000/impl=losertree-2       	   19500	     61488 ns/op	        61.49 ns/hit	     544 B/op	       2 allocs/op
BenchmarkMerge/N=64/K=1000/impl=sort-2            	     148	   8062445 ns/op	      8062 ns/hit	       0 B/op	       0 allocs/op
PASS
ok  	github.com/gatherproxy/gather/internal/merge	21.763s
pkg: github.com/gatherproxy/gather/internal/proxy
BenchmarkSearch/N=4/K=10/via=grpc-par-2  	    6147	    188555 ns/op	  126422 B/op	    2340 allocs/op
BenchmarkOne
    bench_test.go:12: a log line
BenchmarkNoProcs 	 100	 5 ns/op
PASS
`

func TestParseGoBench(t *testing.T) {
	t.Parallel()
	got, err := ParseGoBench(strings.NewReader(goTestOutput))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Fatalf("%d results, want 6: %v", len(got), got)
	}
	want := GoBench{
		Pkg: "github.com/gatherproxy/gather/internal/merge", Name: "BenchmarkMerge/N=64/K=1000/impl=losertree",
		Procs: 2, Iterations: 19500,
		Metrics: map[string]float64{"ns/op": 61488, "ns/hit": 61.49, "B/op": 544, "allocs/op": 2},
	}
	if !reflect.DeepEqual(got[2], want) {
		t.Errorf("third result\n got %+v\nwant %+v", got[2], want)
	}
	if g := got[4]; g.Pkg != "github.com/gatherproxy/gather/internal/proxy" || g.Name != "BenchmarkSearch/N=4/K=10/via=grpc-par" || g.Procs != 2 {
		t.Errorf("a name with a dash: %+v", g)
	}
	if g := got[5]; g.Name != "BenchmarkNoProcs" || g.Procs != 0 || g.Metrics["ns/op"] != 5 {
		t.Errorf("GOMAXPROCS=1 (no suffix): %+v", g)
	}
	for i, want := range map[int]string{
		4: "proxy BenchmarkSearch/N=4/K=10/via=grpc-par  188555 ns/op  126422 B/op  2340 allocs/op",
		3: "merge BenchmarkMerge/N=64/K=1000/impl=sort  8062445 ns/op  0 B/op  0 allocs/op  8062 ns/hit",
	} {
		if s := got[i].String(); s != want {
			t.Errorf("String() = %q, want %q", s, want)
		}
	}
}
