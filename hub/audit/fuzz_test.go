package audit

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/apiserver/pkg/audit/policy"

	"backhaul.io/backhaul/pkg/logging"
)

// memLogger is a Logger whose events stay in its queue, for reading back.
func memLogger(queue int) *Logger {
	log := hclog.NewNullLogger()
	l := &Logger{policy: policy.NewPolicyRuleEvaluator(DefaultPolicy()), queue: make(chan []byte, queue), log: log,
		limited: logging.NewLimited(log, time.Second, 1)}
	l.metrics = NewMetrics(prometheus.NewRegistry(), func() int { return len(l.queue) })
	return l
}

// What the audit log reads off the network is a gateway request's path
// and query (through k8s.io/apiserver's RequestInfoFactory), its
// Impersonate-* headers and its user agent. Whatever they hold, each event
// is one line of JSON that reads back as the same event.
func FuzzGatewayEvent(f *testing.F) {
	f.Add("GET", "/clusters/m1/api/v1/namespaces/default/pods/web-0/exec", "command=sh&stdin=true", "bob", "example.com%2fteam", "blue", "kubectl/v1.36")
	f.Add("GET", "/clusters/m1/apis/apps/v1/deployments", "watch=true&labelSelector=a%3Db&fieldSelector=metadata.name%3Dx", "", "", "", "")
	f.Add("DELETE", "/clusters/m1/api/v1/namespaces/a/pods", "fieldSelector=%%%", "", "", "", "")
	f.Add("PATCH", "/clusters/m1//apis/", "", "system:admin", "%zz", "\n", "ua\r\n")
	f.Add("POST", "/clusters/m1/api/v1/namespaces/a/pods/p/proxy/x/y", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, method, path, rawQuery, impUser, extraKey, extraValue, ua string) {
		if !strings.HasPrefix(path, "/clusters/m1") {
			path = "/clusters/m1" + path
		}
		r := &http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: rawQuery}, Header: http.Header{}, RemoteAddr: "192.0.2.1:1"}
		r.Header.Set("User-Agent", ua)
		if impUser != "" {
			r.Header["Impersonate-User"] = []string{impUser}
		}
		if extraKey != "" {
			r.Header["Impersonate-Extra-"+extraKey] = []string{extraValue}
		}
		l := memLogger(4)
		a := l.Gateway(r, "id", "m1")
		a.Authenticated(alice)
		a.Started(http.StatusOK)
		a.End(nil)

		attrs := memberAttributes(r, "m1")
		if attrs.ResourceRequest && attrs.Resource == "" {
			t.Fatalf("a resource request without a resource: %+v", attrs)
		}
		n := len(l.queue)
		if n == 0 || n > 2 {
			t.Fatalf("%d events", n)
		}
		for range n {
			line := <-l.queue
			if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
				t.Fatalf("not one line: %q", line)
			}
			var ev auditv1.Event
			if err := json.Unmarshal(line, &ev); err != nil {
				t.Fatalf("%v: %q", err, line)
			}
			if ev.AuditID != "id" || ev.Verb != attrs.Verb || ev.User.Username != "alice" {
				t.Fatalf("read back differently: %q", line)
			}
			// Invalid UTF-8 reads back as U+FFFD; from there it is stable.
			again, err := json.Marshal(&ev)
			var ev2 auditv1.Event
			if err != nil || json.Unmarshal(again, &ev2) != nil || !reflect.DeepEqual(ev, ev2) {
				t.Fatalf("does not round-trip:\n%q\n%q", line, again)
			}
		}
	})
}
