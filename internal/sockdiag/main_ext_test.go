package sockdiag_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutines; this keeps it that way, and catches a test that leaves a
// connection's goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
