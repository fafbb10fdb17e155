package frontend

import (
	"encoding/base64"
	"errors"
	"net/http"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/hub/auth"
)

// CONNECT callers send Proxy-Authorization; agents and callers send
// Authorization.
func FuzzCredentialHeaders(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x ", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:tok")), "Basic !!", "Basic", ""} {
		f.Add(s)
	}
	none := auth.NewStaticTokens(nil)
	f.Fuzz(func(t *testing.T, h string) {
		if tok, ok := auth.Bearer(h); ok && tok == "" {
			t.Fatal("empty bearer token accepted")
		}
		if pw, ok := basicPassword(h); ok && pw == "" {
			t.Fatal("empty password accepted")
		}
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", h)
		u, ok, err := none.Authenticate(r)
		if ok || u != nil {
			t.Fatalf("an empty token file authenticated %+v", u)
		}
		if _, isBearer := auth.Bearer(h); isBearer && err == nil {
			t.Fatal("an unknown bearer token was not reported as wrong")
		}
	})
}

// The member's side of an upgraded session is read as websocket frames:
// any bytes, split anywhere, give the same frame state, and the farewell
// is itself well-framed.
func FuzzWebsocketFrames(f *testing.F) {
	f.Add([]byte{0x82, 3, 1, 'h', 'i'}, uint8(1))
	f.Add(wsFrame(nil, wsBinary, make([]byte, 200)), uint8(3))
	f.Add([]byte{0x02, 0x80 | 1, 1, 2, 3, 4, 5, 0x88, 0}, uint8(2))
	f.Add([]byte{0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(5))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		whole := &wsState{statusOnClose: true}
		whole.track(b)
		split := &wsState{statusOnClose: true}
		n := max(int(step), 1)
		for i := 0; i < len(b); i += n {
			split.track(b[i:min(i+n, len(b))])
		}
		if whole.atBoundary() != split.atBoundary() || whole.remaining != split.remaining ||
			whole.inMessage != split.inMessage || whole.closed != split.closed || whole.errored != split.errored {
			t.Fatalf("state depends on the split: %+v vs %+v", whole, split)
		}
		bye := whole.farewell(whyBroken)
		if whole.closed != (len(bye) == 0) {
			t.Fatalf("farewell %q after a close frame: %v", bye, whole.closed)
		}
		check := &wsState{}
		check.track(bye)
		if !check.atBoundary() || (len(bye) > 0 && !check.closed) {
			t.Fatalf("the farewell is not whole frames ending in a close: %q", bye)
		}
	})
}

// A CONNECT host is untrusted: whatever it is, parseTarget either refuses
// it or names exactly one cluster and/or one routable-form address, and a
// named node target reads back from the form the hub prints.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"edge-1.cluster.backhaul", "10-0-0-5.node.edge-1.cluster.backhaul", "fd00--5.node.e.cluster.backhaul",
		"--ffff-a00-5.node.e.cluster.backhaul", "10.0.0.5", "fe80::1%eth0", "a.b.cluster.backhaul", ".node..cluster.backhaul",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got, err := parseTarget(host, DefaultClusterSuffix)
		if err != nil {
			if !errors.Is(err, errNotATarget) {
				t.Fatalf("%q: error %v is not errNotATarget", host, err)
			}
			if got != (connectTarget{}) {
				t.Fatalf("%q: refused but named %+v", host, got)
			}
			return
		}
		if got.cluster == "" && !got.node() {
			t.Fatalf("%q names nothing", host)
		}
		if got.cluster != "" && len(validation.IsDNS1123Label(got.cluster)) > 0 {
			t.Fatalf("%q: cluster %q is not a DNS label", host, got.cluster)
		}
		if got.node() && (got.addr.Zone() != "" || got.addr.Is4In6()) {
			t.Fatalf("%q: address %v is not in the form routes use", host, got.addr)
		}
		if got.node() && got.cluster != "" {
			again, err := parseTarget(nodeHost(got.addr, got.cluster, DefaultClusterSuffix), DefaultClusterSuffix)
			if err != nil || again != got {
				t.Fatalf("%q: %+v does not read back (%+v, %v)", host, got, again, err)
			}
		}
	})
}
