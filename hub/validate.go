package hub

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/frontend"
	"backhaul.io/backhaul/hub/recording"
)

// Validate reports every problem at once.
func (o *Options) Validate() error {
	var errs []error
	kube := o.Registry == RegistryKube
	switch o.Registry {
	case RegistryStatic, RegistryKube:
	default:
		errs = append(errs, fmt.Errorf("--registry %q: want static or kube", o.Registry))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") || (!kube && o.TLSCertFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (with --registry=kube the hub can issue its own)"))
	}
	if (o.CACertFile == "") != (o.CAKeyFile == "") {
		errs = append(errs, errors.New("--ca-cert-file and --ca-key-file go together"))
	}
	if !kube && o.AgentTokenFile == "" && o.AgentTokenDir == "" {
		errs = append(errs, errors.New("one of --agent-token-file or --agent-token-dir is required with --registry=static"))
	}
	if o.TokenAuthFile == "" && o.ClientCAFile == "" && !(kube && o.TokenReview) {
		errs = append(errs, errors.New("one of --token-auth-file, --client-ca-file or --registry=kube with --token-review is required, or no caller could authenticate"))
	}
	switch o.AuthorizationMode {
	case "", AuthzAlwaysAllow:
	case AuthzSubjectAccessReview:
		if !kube {
			errs = append(errs, errors.New("--authorization-mode=SubjectAccessReview needs --registry=kube"))
		}
	default:
		errs = append(errs, fmt.Errorf("--authorization-mode %q: want AlwaysAllow or SubjectAccessReview", o.AuthorizationMode))
	}
	if err := (auth.Mapping{UserPrefix: o.MemberUserPrefix, SystemUserPrefix: o.MemberSystemUserPrefix, GroupPrefix: o.MemberGroupPrefix}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--member-*-prefix: %w", err))
	}
	if o.AgentCertValidity < time.Minute || o.StatusInterval <= 0 || o.Heartbeat <= 0 || o.AuthCacheTTL < 0 {
		errs = append(errs, errors.New("--agent-cert-validity must be at least 1m; status intervals positive; --auth-cache-ttl not negative"))
	}
	if o.AdvertiseURL != "" {
		if u, err := url.Parse(o.AdvertiseURL); err != nil || u.Scheme != "wss" || u.Host == "" {
			errs = append(errs, fmt.Errorf("--advertise-url %q: want wss://host[:port]", o.AdvertiseURL))
		}
	}
	if o.DialTimeout <= 0 || o.KeepAlive <= 0 || o.KeepAliveWait <= 0 || o.ShutdownGrace <= 0 || o.ShutdownDelay < 0 || o.ShutdownDelay > o.ShutdownGrace {
		errs = append(errs, errors.New("timeouts must be positive, and --shutdown-delay at most --shutdown-grace"))
	}
	if o.MaxHandshakes < 1 {
		errs = append(errs, errors.New("--max-handshakes must be at least 1"))
	}
	if o.MaxStreamsPerCaller < 0 || o.MaxStreamsPerCluster < 0 || !(o.MemoryBudget >= 0 && o.MemoryBudget <= 1) {
		errs = append(errs, errors.New("--max-streams-per-caller and --max-streams-per-cluster must not be negative (0: no limit), --memory-budget must be within 0 and 1"))
	}
	if _, err := frontend.ParseMemoryLimit(o.MemoryLimit); err != nil {
		errs = append(errs, fmt.Errorf("--memory-limit: %w", err))
	}
	if o.Recording != recording.Off && o.RecordingDir == "" {
		errs = append(errs, fmt.Errorf("--recording=%s needs --recording-dir", o.Recording))
	}
	if o.PeerListen != "" && (!kube || o.PeersService == "") {
		errs = append(errs, errors.New("--peer-listen needs --registry=kube and --peers-service (the directory lives in the host cluster)"))
	}
	if !strings.HasPrefix(o.ClusterSuffix, ".") || len(o.ClusterSuffix) < 2 {
		errs = append(errs, fmt.Errorf("--cluster-suffix %q must start with a dot", o.ClusterSuffix))
	}
	if o.ConnectUDS != "" && o.ConnectUDSUser == "" {
		errs = append(errs, errors.New("--connect-uds-user must name an identity"))
	}
	if err := o.Audit.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
