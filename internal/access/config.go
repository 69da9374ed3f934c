package access

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Config says how a server authenticates and authorizes its callers. The zero value does
// neither: every caller that the transport lets in may call every method.
type Config struct {
	// PolicyFile is a grpc-go authorization policy (JSON; see the package comment). Empty: no
	// authorization.
	PolicyFile string `yaml:"policy_file"`
	// TokensFile lists the bearer tokens accepted, one "NAME TOKEN" per line; blank lines and
	// lines starting with # are skipped; tokens are at least MinTokenLength characters. Empty:
	// no bearer tokens.
	TokensFile string `yaml:"tokens_file"`
	// Refresh is how often both files are checked for changes. Default 5s.
	Refresh time.Duration `yaml:"refresh"`
}

// Enabled reports whether c asks for a Guard at all.
func (c Config) Enabled() bool { return c.PolicyFile != "" || c.TokensFile != "" }

func (c Config) refresh() time.Duration {
	if c.Refresh > 0 {
		return c.Refresh
	}
	return 5 * time.Second
}

// Validate reads both files once, the way New will; every error names the key under section
// ("authz.policy_file: ...").
func (c Config) Validate(section string) error {
	var errs []error
	if c.Refresh < 0 {
		errs = append(errs, fmt.Errorf("%s.refresh: negative (%s)", section, c.Refresh))
	}
	if c.PolicyFile != "" {
		if data, err := os.ReadFile(c.PolicyFile); err != nil {
			errs = append(errs, fmt.Errorf("%s.policy_file: %w", section, err))
		} else if _, err := parsePolicy(c.PolicyFile, data); err != nil {
			errs = append(errs, fmt.Errorf("%s.policy_file: %w", section, err))
		}
	}
	if c.TokensFile != "" {
		if data, err := os.ReadFile(c.TokensFile); err != nil {
			errs = append(errs, fmt.Errorf("%s.tokens_file: %w", section, err))
		} else if _, err := parseTokens(c.TokensFile, data); err != nil {
			errs = append(errs, fmt.Errorf("%s.tokens_file: %w", section, err))
		}
	}
	return errors.Join(errs...)
}

// warnIfShared logs a warning when a file of secrets can be read by other users.
func warnIfShared(log *slog.Logger, key, file string) {
	fi, err := os.Stat(file)
	if err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("a file of secrets is readable by other users: chmod 600 it", "key", key, "file", file, "mode", fi.Mode().Perm().String())
	}
}
