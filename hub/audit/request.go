package audit

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"backhaul.io/backhaul/hub/auth"
)

// Annotations the hub adds to its events.
const (
	// AnnotationCluster names the cluster the request was for.
	AnnotationCluster = "backhaul.io/cluster"
	// AnnotationFrontEnd says which front end served it: gateway, connect,
	// or connect-socket (a Unix socket, whose callers the socket vouches
	// for).
	AnnotationFrontEnd = "backhaul.io/front-end"
	// AnnotationBytesIn and AnnotationBytesOut count the bytes carried from
	// the caller and to the caller: bodies for a plain request, everything
	// after the switch for an upgrade, the tunnel's bytes for CONNECT (so
	// TLS records there). On ResponseComplete only.
	AnnotationBytesIn  = "backhaul.io/bytes-in"
	AnnotationBytesOut = "backhaul.io/bytes-out"
	// AnnotationLatency is how long the request took, as a Go duration
	// (also StageTimestamp − RequestReceivedTimestamp). On
	// ResponseComplete only.
	AnnotationLatency = "backhaul.io/latency"
	// AnnotationRefusal is the reason the hub refused the request (as in
	// backhaul_hub_errors_total): the member never saw it.
	AnnotationRefusal = "backhaul.io/refusal"
	// AnnotationMemberUser is the user the member was asked to act as for
	// the caller (auth.Mapping): the impersonated user of the member's own
	// event.
	AnnotationMemberUser = "backhaul.io/member-user"
	// AnnotationAborted marks a response cut off before its end: the
	// caller went away, or the stream from the member broke.
	AnnotationAborted = "backhaul.io/aborted"
)

// Front ends, for AnnotationFrontEnd.
const (
	FrontEndGateway       = "gateway"
	FrontEndConnect       = "connect"
	FrontEndConnectSocket = "connect-socket"
)

// maxUserAgent is kube-apiserver's bound on the user agent it records.
const maxUserAgent = 1024

// Request is one request being audited: its front end fills in what it
// learns (Authenticated, Refused, ...) and ends it with End. The policy is
// evaluated when the caller is known (Authenticated), or at the end for a
// caller who never was. Every method is a no-op on a nil *Request (no
// audit log).
type Request struct {
	l     *Logger
	attrs attributes
	// impersonation is who the caller asked to act as (gateway).
	impersonation *authnv1.UserInfo
	in, out       atomic.Int64

	mu        sync.Mutex
	ev        auditv1.Event
	evaluated bool
	level     auditinternal.Level
	omit      []auditinternal.Stage
	code      int  // the response code, once known
	ended     bool // ResponseComplete or Panic was emitted
}

// Gateway starts auditing a gateway request for cluster, whose audit id is
// id. r's body, if any, is replaced by one that counts what is read.
func (l *Logger) Gateway(r *http.Request, id, cluster string) *Request {
	if l == nil {
		return nil
	}
	a := l.start(r, id, memberAttributes(r, cluster), FrontEndGateway)
	a.ev.RequestURI = r.URL.RequestURI()
	a.ev.Annotations[AnnotationCluster] = cluster
	if a.attrs.ResourceRequest {
		a.ev.ObjectRef = &auditv1.ObjectReference{
			Resource: a.attrs.Resource, Subresource: a.attrs.Subresource, Namespace: a.attrs.Namespace,
			Name: a.attrs.Name, APIGroup: a.attrs.APIGroup, APIVersion: a.attrs.APIVersion,
		}
	}
	a.impersonation = requestedImpersonation(r.Header)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, n: &a.in}
	}
	return a
}

// Connect starts auditing a CONNECT request whose audit id is id; frontEnd
// is FrontEndConnect or FrontEndConnectSocket. The cluster is set once the
// target is resolved (SetCluster).
func (l *Logger) Connect(r *http.Request, id, frontEnd string) *Request {
	if l == nil {
		return nil
	}
	a := l.start(r, id, connectAttributes(r), frontEnd)
	a.ev.RequestURI = r.Host // what a CONNECT request line names
	return a
}

func (l *Logger) start(r *http.Request, id string, attrs attributes, frontEnd string) *Request {
	a := &Request{l: l, attrs: attrs}
	a.ev = auditv1.Event{
		TypeMeta:                 metav1.TypeMeta{Kind: "Event", APIVersion: auditv1.SchemeGroupVersion.String()},
		Level:                    auditv1.LevelMetadata,
		AuditID:                  types.UID(id),
		Verb:                     attrs.Verb,
		UserAgent:                userAgent(r),
		RequestReceivedTimestamp: metav1.NewMicroTime(now()),
		Annotations:              map[string]string{AnnotationFrontEnd: frontEnd},
	}
	for _, ip := range utilnet.SourceIPs(r) {
		a.ev.SourceIPs = append(a.ev.SourceIPs, ip.String())
	}
	return a
}

func userAgent(r *http.Request) string {
	ua := r.UserAgent()
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent] + "...TRUNCATED"
	}
	return ua
}

// SetCluster names the cluster a CONNECT reached.
func (a *Request) SetCluster(name string) { a.Annotate(AnnotationCluster, name) }

// Annotate adds an annotation to every event still to come.
func (a *Request) Annotate(key, value string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ev.Annotations[key] = value
}

// Authenticated records the caller, and the identity it asked to act as;
// the policy is evaluated now, and the RequestReceived stage emitted.
func (a *Request) Authenticated(u *auth.User) {
	if a == nil || u == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.evaluated {
		return
	}
	a.ev.User, a.attrs.User = userInfo(u)
	a.ev.ImpersonatedUser = a.impersonation
	a.emit(auditinternal.StageRequestReceived, now())
}

// Refused records the hub's refusal: code, the errors_total reason and
// the message the caller got.
func (a *Request) Refused(code int, reason, msg string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ev.Annotations[AnnotationRefusal] = reason
	a.ev.ResponseStatus = &metav1.Status{Status: metav1.StatusFailure, Code: int32(code), Message: msg}
	a.code = code
}

// Started records that the response began with code (for CONNECT, the
// "200 Connection established"): a long-running request's ResponseStarted.
func (a *Request) Started(code int) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.respond(code)
}

// respond notes the first final response code; callers hold mu.
func (a *Request) respond(code int) {
	// 1xx other than a protocol switch are interim (100 Continue).
	if a.code != 0 || (code < 200 && code != http.StatusSwitchingProtocols) {
		return
	}
	a.code = code
	if a.ev.ResponseStatus == nil {
		a.ev.ResponseStatus = &metav1.Status{Code: int32(code)}
	}
	if a.attrs.longRunning {
		a.emit(auditinternal.StageResponseStarted, now())
	}
}

// End emits ResponseComplete. recovered is what the handler's recover()
// returned: a response ReverseProxy aborted (http.ErrAbortHandler: the
// caller or the member went away mid-response) completes with
// AnnotationAborted; any other panic is a Panic event with 500. End then
// panics on with it, so the server sees what it would have. Call it as
//
//	defer func() { req.End(recover()) }()
func (a *Request) End(recovered any) {
	if a != nil {
		a.end(recovered)
	}
	if recovered != nil {
		panic(recovered)
	}
}

func (a *Request) end(recovered any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended {
		return
	}
	a.ended = true
	at := now()
	stage := auditinternal.StageResponseComplete
	switch {
	case recovered == http.ErrAbortHandler:
		a.ev.Annotations[AnnotationAborted] = "true"
	case recovered != nil:
		stage = auditinternal.StagePanic
		a.ev.ResponseStatus = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Reason: metav1.StatusReasonInternalError, Message: "hub handler panicked"}
	}
	if a.ev.ResponseStatus == nil {
		// Nothing was answered (the caller went away first): what
		// kube-apiserver records then.
		a.respond(http.StatusOK)
		a.ev.ResponseStatus.Message = "Connection closed early"
	}
	a.ev.Annotations[AnnotationBytesIn] = strconv.FormatInt(a.in.Load(), 10)
	a.ev.Annotations[AnnotationBytesOut] = strconv.FormatInt(a.out.Load(), 10)
	a.ev.Annotations[AnnotationLatency] = at.Sub(a.ev.RequestReceivedTimestamp.Time).String()
	a.emit(stage, at)
}

// now is the time in the precision events record (MicroTime), so the
// latency annotation is exactly the difference of the two timestamps.
func now() time.Time { return time.Now().Truncate(time.Microsecond) }

// emit writes the event at stage, if the policy records it; callers hold
// mu.
func (a *Request) emit(stage auditinternal.Stage, at time.Time) {
	if !a.evaluated {
		a.level, a.omit = a.l.evaluate(a.attrs)
		a.evaluated = true
	}
	if a.level == auditinternal.LevelNone || slices.Contains(a.omit, stage) {
		return
	}
	ev := a.ev
	ev.Stage = auditv1.Stage(stage)
	ev.StageTimestamp = metav1.NewMicroTime(at)
	ev.Annotations = maps.Clone(a.ev.Annotations)
	if ev.ResponseStatus != nil {
		st := *ev.ResponseStatus
		ev.ResponseStatus = &st
	}
	line, err := json.Marshal(&ev)
	if err != nil { // an Event of strings and numbers always marshals
		a.l.log.Error("cannot encode an audit event", "audit_id", ev.AuditID, "error", err)
		return
	}
	a.l.enqueue(append(line, '\n'))
}
