// Package kubestatus writes errors as Kubernetes Status objects, so kubectl
// and client-go print the hub's reason instead of a bare HTTP code.
package kubestatus

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Write answers code with a Status whose message is msg.
func Write(w http.ResponseWriter, code int, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reasonFor(code),
		Code:     int32(code),
	}
	b, _ := json.Marshal(st)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func reasonFor(code int) metav1.StatusReason {
	switch code {
	case http.StatusUnauthorized:
		return metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusTooManyRequests:
		return metav1.StatusReasonTooManyRequests
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	case http.StatusGatewayTimeout:
		return metav1.StatusReasonTimeout
	case http.StatusBadGateway:
		return metav1.StatusReasonInternalError
	default:
		return metav1.StatusReasonUnknown
	}
}

// Message reads the message of a Status body, or returns the body itself
// (trimmed to 512 bytes) when it is not one.
func Message(body []byte) string {
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err == nil && st.Message != "" {
		return st.Message
	}
	if len(body) > 512 {
		body = body[:512]
	}
	return strings.TrimSpace(string(body))
}

// MethodNotAllowed answers 405 with a Status and an Allow header naming
// allow. Register it at the method-less pattern of a path whose handlers
// are all method-specific, so a wrong method gets a Status instead of
// net/http's plain-text 405.
func MethodNotAllowed(allow ...string) http.Handler {
	a := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", a)
		Write(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, a))
	})
}
