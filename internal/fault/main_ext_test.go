package fault_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutines of its own; this catches a fault that leaves a handler, a
// timer or a connection's goroutines behind after its call.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
