package benchsuite

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a report was measured. Fields that cannot be read are "unknown".
type Machine struct {
	CPU       string    `json:"cpu"`
	Cores     int       `json:"cores"`
	MemoryGiB float64   `json:"memory_gib"`
	Kernel    string    `json:"kernel"`
	OS        string    `json:"os"`
	Go        string    `json:"go"`
	Date      time.Time `json:"date"`
}

// DescribeMachine reads the machine's description (from /proc on Linux).
func DescribeMachine() Machine {
	m := Machine{
		CPU:    "unknown",
		Cores:  runtime.NumCPU(),
		Kernel: "unknown",
		OS:     runtime.GOOS + "/" + runtime.GOARCH,
		Go:     runtime.Version(),
		Date:   time.Now().UTC().Truncate(time.Second),
	}
	if v := procField("/proc/cpuinfo", "model name", ":"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal", ":"); v != "" {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64); err == nil {
			m.MemoryGiB = kb / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// String is a one-line description, e.g. "AMD EPYC 7B13, 2 cores, 23.5 GiB RAM, Linux
// 6.1.0 (linux/amd64), go1.26.8, 2025-01-02 15:04 UTC".
func (m Machine) String() string {
	return fmt.Sprintf("%s, %d cores, %.1f GiB RAM, kernel %s (%s), %s, %s",
		m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.OS, m.Go, m.Date.Format("2006-01-02 15:04 MST"))
}

// procField returns the value of the first line of file whose key (before sep) is key.
func procField(file, key, sep string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
