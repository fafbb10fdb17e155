package ctl

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"backhaul.io/backhaul/pkg/identity"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// HubInfo is how edge sites and callers reach the hub.
type HubInfo struct {
	// URL is the hub's external address; scheme and path as given, with
	// no trailing slash.
	URL *url.URL
	// CA is the PEM bundle that verifies the hub's serving certificate.
	CA []byte
}

// TunnelURL is the address agents dial (wss://).
func (h HubInfo) TunnelURL() string { return h.withScheme("wss") }

// GatewayURL is the address callers reach clusters under (https://).
func (h HubInfo) GatewayURL() string { return h.withScheme("https") }

func (h HubInfo) withScheme(scheme string) string {
	u := *h.URL
	u.Scheme = scheme
	return u.String()
}

// parseHubURL accepts wss:// and https:// (the same TLS listener serves
// agents and callers) and nothing that could not be joined with a path.
func parseHubURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme != "wss" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: want wss://host:port or https://host:port", s)
	case u.Host == "":
		return nil, fmt.Errorf("%q: no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%q: user info, query and fragment are not allowed", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func checkCA(pem []byte) error {
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return errors.New("no PEM certificate found")
	}
	return nil
}

// resolveHubInfo takes each of the URL and CA from its flag when given,
// else from the hub-info ConfigMap, which it reads only when needed.
func resolveHubInfo(ctx context.Context, c client.Reader, o *GlobalOptions) (HubInfo, error) {
	var (
		info     HubInfo
		rawURL   = o.HubURL
		urlFrom  = "--hub-url"
		caFrom   = "--hub-ca-file " + o.HubCAFile
		cmSource = fmt.Sprintf("ConfigMap %s/%s", o.Namespace, identity.HubInfoConfigMap)
	)
	if o.HubCAFile != "" {
		b, err := os.ReadFile(o.HubCAFile)
		if err != nil {
			return HubInfo{}, fmt.Errorf("--hub-ca-file: %w", err)
		}
		info.CA = b
	}
	if rawURL == "" || info.CA == nil {
		var cm corev1.ConfigMap
		err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: identity.HubInfoConfigMap}, &cm)
		switch {
		case apierrors.IsNotFound(err):
			return HubInfo{}, fmt.Errorf("hub address unknown: pass %s, or create %s with keys %q (wss://host:port) and %q (PEM)",
				missingFlags(rawURL == "", info.CA == nil), cmSource, identity.HubInfoKeyURL, identity.HubInfoKeyCA)
		case err != nil:
			return HubInfo{}, fmt.Errorf("read %s (or pass %s): %w", cmSource, missingFlags(rawURL == "", info.CA == nil), err)
		}
		if rawURL == "" {
			if rawURL = cm.Data[identity.HubInfoKeyURL]; rawURL == "" {
				return HubInfo{}, fmt.Errorf("hub URL unknown: pass --hub-url, or set key %q of %s", identity.HubInfoKeyURL, cmSource)
			}
			urlFrom = fmt.Sprintf("key %q of %s", identity.HubInfoKeyURL, cmSource)
		}
		if info.CA == nil {
			if info.CA = []byte(cm.Data[identity.HubInfoKeyCA]); len(info.CA) == 0 {
				return HubInfo{}, fmt.Errorf("hub CA unknown: pass --hub-ca-file, or set key %q of %s", identity.HubInfoKeyCA, cmSource)
			}
			caFrom = fmt.Sprintf("key %q of %s", identity.HubInfoKeyCA, cmSource)
		}
	}
	u, err := parseHubURL(rawURL)
	if err != nil {
		return HubInfo{}, fmt.Errorf("hub URL from %s: %w", urlFrom, err)
	}
	info.URL = u
	if err := checkCA(info.CA); err != nil {
		return HubInfo{}, fmt.Errorf("hub CA from %s: %w", caFrom, err)
	}
	return info, nil
}

func missingFlags(url, ca bool) string {
	switch {
	case url && ca:
		return "--hub-url and --hub-ca-file"
	case url:
		return "--hub-url"
	default:
		return "--hub-ca-file"
	}
}
