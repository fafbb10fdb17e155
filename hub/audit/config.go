package audit

import (
	"errors"
	"fmt"

	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	"k8s.io/apiserver/pkg/audit/policy"
)

// Stdout is the Path that writes the log to standard output.
const Stdout = "-"

// Config says where the audit log goes and what it records. The rotation
// settings mean what kube-apiserver's --audit-log-max* flags mean (they
// are gopkg.in/natefinch/lumberjack.v2's, as there).
type Config struct {
	// Path is the log file, rotated; Stdout for standard output (never
	// rotated); empty: no audit log.
	Path string
	// MaxSize is the size in megabytes at which the file is rotated (0:
	// lumberjack's default, 100).
	MaxSize int
	// MaxBackups is how many rotated files are kept (0: all, unless
	// MaxAge removes them).
	MaxBackups int
	// MaxAge is how many days rotated files are kept (0: no limit).
	MaxAge int
	// Compress gzips rotated files.
	Compress bool
	// PolicyFile is a kube-apiserver audit Policy (audit.k8s.io/v1); empty:
	// DefaultPolicy.
	PolicyFile string
	// QueueSize is how many events may wait for the writer; an event that
	// finds the queue full is dropped and counted.
	QueueSize int
}

// DefaultConfig is the audit log off, with the rotation and queue an
// operator who only sets Path gets.
func DefaultConfig() Config {
	return Config{MaxSize: 100, MaxBackups: 10, QueueSize: 10_000}
}

// Enabled says whether there is an audit log.
func (c Config) Enabled() bool { return c.Path != "" }

// Validate reports every problem at once; the policy file is read and
// checked too, so a bad one fails at start-up.
func (c Config) Validate() error {
	var errs []error
	if c.MaxSize < 0 || c.MaxBackups < 0 || c.MaxAge < 0 {
		errs = append(errs, errors.New("--audit-log-maxsize, --audit-log-maxbackup and --audit-log-maxage must not be negative"))
	}
	if c.QueueSize < 1 {
		errs = append(errs, fmt.Errorf("--audit-log-queue-size %d: must be at least 1", c.QueueSize))
	}
	if c.PolicyFile != "" {
		if !c.Enabled() {
			errs = append(errs, errors.New("--audit-policy-file needs --audit-log-path"))
		}
		if _, err := c.policy(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DefaultPolicy is what is recorded without a policy file: every request
// at Metadata, without the RequestReceived stage (the ResponseComplete
// event says all it says, and long-running requests get ResponseStarted).
func DefaultPolicy() *auditinternal.Policy {
	return &auditinternal.Policy{
		OmitStages: []auditinternal.Stage{auditinternal.StageRequestReceived},
		Rules:      []auditinternal.PolicyRule{{Level: auditinternal.LevelMetadata}},
	}
}

// policy is the policy file's, else DefaultPolicy.
func (c Config) policy() (*auditinternal.Policy, error) {
	if c.PolicyFile == "" {
		return DefaultPolicy(), nil
	}
	p, err := policy.LoadPolicyFromFile(c.PolicyFile)
	if err != nil {
		return nil, fmt.Errorf("--audit-policy-file: %w", err)
	}
	return p, nil
}
