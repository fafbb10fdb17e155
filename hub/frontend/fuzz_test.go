package frontend

import (
	"encoding/base64"
	"net/http"
	"testing"

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
