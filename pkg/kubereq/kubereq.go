// Package kubereq reads a Kubernetes API request as kube-apiserver does:
// what it asks for (k8s.io/apiserver's RequestInfoFactory) and whether it
// is long-running. The hub's audit and the agent's choice of connection
// share it.
package kubereq

import (
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// infos reads paths as kube-apiserver does: /api is the core group,
// /apis/GROUP the others. (Map literals: the field's type, sets.String,
// is deprecated, and naming it would be flagged.)
var infos = &request.RequestInfoFactory{
	APIPrefixes:          map[string]sets.Empty{"api": {}, "apis": {}},
	GrouplessAPIPrefixes: map[string]sets.Empty{"api": {}},
}

// Info is what r asks of an API server. On a bad query (a selector that
// does not parse) it is as good as what was read before it, which is what
// the API server's own audit would record too.
func Info(r *http.Request) *request.RequestInfo {
	info, _ := infos.NewRequestInfo(r)
	if info == nil {
		info = &request.RequestInfo{Path: r.URL.Path, Verb: strings.ToLower(r.Method)}
	}
	return info
}

// LongRunning is kube-apiserver's own test (BasicLongRunningRequestCheck
// with the verbs and subresources kube-apiserver passes it): watches,
// proxies, exec, attach, port-forward and logs. It is copied rather than
// imported: k8s.io/apiserver/pkg/server/filters would bring the whole
// generic API server in.
func LongRunning(info *request.RequestInfo) bool {
	switch info.Verb {
	case "watch", "proxy":
		return true
	}
	if !info.IsResourceRequest {
		return false
	}
	switch info.Subresource {
	case "attach", "exec", "proxy", "log", "portforward":
		return true
	}
	return false
}
