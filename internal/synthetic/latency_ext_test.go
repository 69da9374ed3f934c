package synthetic_test

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatherproxy/gather/internal/synthetic"
)

// These tests sample Next; none of them sleeps or measures time.

func TestFixed(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, time.Microsecond, 2 * time.Millisecond} {
		l := synthetic.Fixed(d)
		for range 3 {
			if got := l.Next(); got != d {
				t.Errorf("Fixed(%v).Next() = %v", d, got)
			}
		}
	}
}

func samples(l synthetic.Latency, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = l.Next()
	}
	return out
}

func TestLogNormalDistribution(t *testing.T) {
	t.Parallel()
	const (
		n      = 10000
		median = 2 * time.Millisecond
		sigma  = 0.5
	)
	s := samples(synthetic.LogNormal(median, sigma, 1), n)
	slices.Sort(s)

	// The sample median's standard error is about 1.25·sigma/sqrt(n) = 0.6% in log terms; 4% is
	// over six of them.
	if got := s[n/2]; math.Abs(float64(got)/float64(median)-1) > 0.04 {
		t.Errorf("median of %d draws = %v, want %v ± 4%%", n, got, median)
	}
	// ln(draws) is normal with standard deviation sigma.
	var sum, sumSq float64
	for _, d := range s {
		if d <= 0 {
			t.Fatalf("non-positive draw %v", d)
		}
		x := math.Log(float64(d))
		sum += x
		sumSq += x * x
	}
	mean := sum / n
	sd := math.Sqrt(sumSq/n - mean*mean)
	if math.Abs(sd/sigma-1) > 0.05 {
		t.Errorf("standard deviation of ln(draws) = %.4f, want %v ± 5%%", sd, sigma)
	}
	// p99 of a log-normal is median·e^(2.326·sigma), about 3.2×median here.
	want99 := float64(median) * math.Exp(2.326*sigma)
	if got := float64(s[n*99/100]); math.Abs(got/want99-1) > 0.15 {
		t.Errorf("p99 of draws = %v, want %v ± 15%%", time.Duration(got), time.Duration(want99))
	}
}

func TestLogNormalZeroSigmaIsFixed(t *testing.T) {
	t.Parallel()
	for i, d := range samples(synthetic.LogNormal(3*time.Millisecond, 0, 1), 100) {
		if d != 3*time.Millisecond {
			t.Fatalf("draw %d = %v, want 3ms", i, d)
		}
	}
}

func TestLogNormalIsDeterministic(t *testing.T) {
	t.Parallel()
	a := samples(synthetic.LogNormal(time.Millisecond, 1, 5), 1000)
	b := samples(synthetic.LogNormal(time.Millisecond, 1, 5), 1000)
	c := samples(synthetic.LogNormal(time.Millisecond, 1, 6), 1000)
	if !slices.Equal(a, b) {
		t.Error("two LogNormals with seed 5 gave different sequences")
	}
	if slices.Equal(a, c) {
		t.Error("seeds 5 and 6 gave the same sequence")
	}
}

func TestLogNormalConcurrentDrawsSameValues(t *testing.T) {
	t.Parallel()
	const workers, each = 8, 500
	want := samples(synthetic.LogNormal(time.Millisecond, 1, 9), workers*each)
	l := synthetic.LogNormal(time.Millisecond, 1, 9)
	got := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { got[w] = samples(l, each) })
	}
	wg.Wait()
	all := slices.Concat(got...)
	slices.Sort(all)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Error("concurrent draws are not the same values as sequential ones")
	}
}

func TestSlowOneIn(t *testing.T) {
	t.Parallel()
	const base = 2 * time.Millisecond
	tests := []struct {
		every     int
		seed      uint64
		firstSlow int // 1-based number of the first slow call
	}{
		{1, 0, 1},
		{100, 0, 100},
		{100, 3, 97},
		{100, 103, 97},
		{7, 6, 1},
	}
	for _, tt := range tests {
		l := synthetic.SlowOneIn(tt.every, 10, base, tt.seed)
		var slow []int
		for i, d := range samples(l, 10*tt.every) {
			switch d {
			case base:
			case 10 * base:
				slow = append(slow, i+1)
			default:
				t.Fatalf("every=%d seed=%d: call %d took %v", tt.every, tt.seed, i+1, d)
			}
		}
		if len(slow) != 10 || slow[0] != tt.firstSlow || slow[1]-slow[0] != tt.every {
			t.Errorf("every=%d seed=%d: slow calls %v, want 10 of them from %d, %d apart",
				tt.every, tt.seed, slow, tt.firstSlow, tt.every)
		}
	}
}

func TestSlowOneInConcurrentCountsExactly(t *testing.T) {
	t.Parallel()
	l := synthetic.SlowOneIn(50, 3, time.Millisecond, 0)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		slow int
	)
	for range 8 {
		wg.Go(func() {
			n := 0
			for _, d := range samples(l, 1000) {
				if d == 3*time.Millisecond {
					n++
				}
			}
			mu.Lock()
			slow += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if slow != 8000/50 {
		t.Errorf("%d slow calls of 8000, want %d", slow, 8000/50)
	}
}

func TestConstructorsPanicOnBadArguments(t *testing.T) {
	t.Parallel()
	tests := map[string]func(){
		"Fixed negative":       func() { synthetic.Fixed(-1) },
		"Fixed too long":       func() { synthetic.Fixed(synthetic.MaxLatency + 1) },
		"LogNormal zero":       func() { synthetic.LogNormal(0, 1, 0) },
		"LogNormal sigma<0":    func() { synthetic.LogNormal(time.Millisecond, -1, 0) },
		"LogNormal sigma NaN":  func() { synthetic.LogNormal(time.Millisecond, math.NaN(), 0) },
		"LogNormal sigma Inf":  func() { synthetic.LogNormal(time.Millisecond, math.Inf(1), 0) },
		"SlowOneIn every 0":    func() { synthetic.SlowOneIn(0, 2, time.Millisecond, 0) },
		"SlowOneIn factor 0.5": func() { synthetic.SlowOneIn(10, 0.5, time.Millisecond, 0) },
		"SlowOneIn too long":   func() { synthetic.SlowOneIn(10, 1e6, time.Second, 0) },
	}
	for name, f := range tests {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestLogNormalCapsDraws(t *testing.T) {
	t.Parallel()
	// With sigma 50 about a third of the draws are above MaxLatency at a 1s median (and a third
	// round down to 0).
	capped := 0
	for i, d := range samples(synthetic.LogNormal(time.Second, 50, 1), 1000) {
		if d < 0 || d > synthetic.MaxLatency {
			t.Fatalf("draw %d = %v, outside [0, %v]", i, d, synthetic.MaxLatency)
		}
		if d == synthetic.MaxLatency {
			capped++
		}
	}
	if capped == 0 {
		t.Error("no draw was capped")
	}
}

func TestModelsPrintInFlagSyntax(t *testing.T) {
	t.Parallel()
	for _, l := range []synthetic.Latency{
		synthetic.Fixed(0),
		synthetic.Fixed(1500 * time.Microsecond),
		synthetic.LogNormal(2*time.Millisecond, 0.5, 0),
		synthetic.SlowOneIn(100, 2.5, time.Millisecond, 0),
	} {
		s := fmt.Sprint(l)
		back, err := synthetic.ParseLatency(s, 0)
		if err != nil {
			t.Errorf("ParseLatency(%q): %v", s, err)
			continue
		}
		if got := fmt.Sprint(back); got != s {
			t.Errorf("ParseLatency(%q) prints as %q", s, got)
		}
	}
}
