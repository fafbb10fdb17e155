package frontend

import (
	"encoding/binary"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
)

func watchResponse(t *testing.T, target, contentType string) (*http.Request, *http.Response, *io.PipeWriter) {
	u, err := url.Parse(target)
	require.NoError(t, err)
	pr, pw := io.Pipe()
	req := &http.Request{URL: u}
	resp := &http.Response{Header: http.Header{"Content-Type": {contentType}}, Body: pr, Request: req}
	// The proxy always closes the body; so do these tests (after wrap).
	t.Cleanup(func() { _ = resp.Body.Close(); _ = pw.Close() })
	return req, resp, pw
}

// readAll reads body until it ends, in the background.
func readAll(body io.Reader) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(body)
		out <- b
	}()
	return out
}

func TestWatchEndsBetweenEventsOnDrain(t *testing.T) {
	var ws watches
	req, resp, upstream := watchResponse(t, "http://m/api/v1/pods?watch=true", "application/json")
	ws.wrap(req, resp)
	got := readAll(resp.Body)

	// Half an event is in flight when the replica drains: the watch ends
	// only after the rest of it.
	_, _ = io.WriteString(upstream, `{"type":"ADDED","object":{"kind":"Pod"}}`+"\n"+`{"type":"MODIFIED",`)
	time.Sleep(20 * time.Millisecond) // let the reader take the half event
	ws.drain()
	_, _ = io.WriteString(upstream, `"object":{"kind":"Pod"}}`+"\n")
	select {
	case b := <-got:
		assert.Equal(t, `{"type":"ADDED","object":{"kind":"Pod"}}`+"\n"+`{"type":"MODIFIED","object":{"kind":"Pod"}}`+"\n", string(b))
	case <-time.After(hubtest.WaitBound):
		t.Fatal("the watch did not end after the event in flight")
	}
	_ = upstream.Close()
}

func TestIdleWatchEndsAtOnceOnDrain(t *testing.T) {
	var ws watches
	req, resp, upstream := watchResponse(t, "http://m/api/v1/namespaces/default/configmaps?watch=1", "application/vnd.kubernetes.protobuf;stream=watch")
	ws.wrap(req, resp)
	got := readAll(resp.Body)
	frame := func(payload string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
		return append(b, payload...)
	}
	_, _ = upstream.Write(frame("event-1"))
	time.Sleep(20 * time.Millisecond)
	ws.drain() // nothing in flight: the idle read is woken and the body ends
	select {
	case b := <-got:
		assert.Equal(t, frame("event-1"), b)
	case <-time.After(hubtest.WaitBound):
		t.Fatal("an idle watch was not ended")
	}
	_ = upstream.Close()

	// A watch that starts while the replica drains ends at once too.
	req, resp, upstream = watchResponse(t, "http://m/api/v1/pods?watch=true", "application/json")
	ws.wrap(req, resp)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Empty(t, b)
	_ = upstream.Close()
}

func TestOnlyWatchesAreWrapped(t *testing.T) {
	var ws watches
	for _, tc := range []struct{ target, ct string }{
		{"http://m/api/v1/pods", "application/json"},
		{"http://m/api/v1/pods?watch=true", "text/plain"},
		{"http://m/api/v1/pods?watch=false", "application/json"},
	} {
		req, resp, upstream := watchResponse(t, tc.target, tc.ct)
		body := resp.Body
		ws.wrap(req, resp)
		assert.Same(t, body, resp.Body, tc.target)
		_ = upstream.Close()
	}
}

func TestWatchBrokenBetweenEventsEndsCleanly(t *testing.T) {
	var ws watches
	req, resp, upstream := watchResponse(t, "http://m/api/v1/pods?watch=true", "application/json")
	ws.wrap(req, resp)
	got := readAllErr(resp.Body)
	_, _ = io.WriteString(upstream, `{"type":"ADDED","object":{}}`+"\n")
	_ = upstream.CloseWithError(io.ErrUnexpectedEOF) // the route went away between events
	r := <-got
	require.NoError(t, r.err, "the client resumes from its last event instead of seeing an error")
	assert.Equal(t, `{"type":"ADDED","object":{}}`+"\n", string(r.b))

	req, resp, upstream = watchResponse(t, "http://m/api/v1/pods?watch=true", "application/json")
	ws.wrap(req, resp)
	got = readAllErr(resp.Body)
	_, _ = io.WriteString(upstream, `{"type":"ADDED",`)
	_ = upstream.CloseWithError(io.ErrUnexpectedEOF) // broken inside an event
	require.ErrorIs(t, (<-got).err, io.ErrUnexpectedEOF)
}

type readResult struct {
	b   []byte
	err error
}

func readAllErr(body io.Reader) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(body)
		out <- readResult{b, err}
	}()
	return out
}
