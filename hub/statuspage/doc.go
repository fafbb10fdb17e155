// Package statuspage is the hub's status page: the registered fleet as a
// table and as tiles, each cluster with its tunnel's health (connected,
// ready, round trip with an hour of history, streams, bytes, reconnects,
// flapping, last disconnect), with search, filters and live updates.
//
// Everything the browser loads is embedded (ui/): one HTML page, one
// stylesheet and one script, served under a Content-Security-Policy that
// allows nothing inline and nothing from elsewhere. The page is a shell
// without data; it reads the fleet from two JSON endpoints:
//
//	GET /status/api/clusters          the fleet the caller may reach
//	GET /status/api/history?cluster=  RTT history of a few clusters
//
// Cost is bounded by design, because a page left open on a wall screen
// polls forever and a fleet may have 10,000 clusters:
//
//   - A page view never touches a tunnel. The fleet is read from a
//     snapshot the Builder makes in the background from what the hub
//     already keeps (Cluster objects from the informer's cache, this
//     replica's sessions, the prober's measurements), at most once per
//     Config.Refresh and only while someone is looking.
//   - Each cluster's JSON is encoded once per snapshot; an answer is the
//     concatenation of the rows the caller may reach, compressed once per
//     caller and snapshot, and answered 304 while nothing changed.
//   - Which clusters a caller may reach is asked once per caller and
//     Config.AccessTTL: one review for "every cluster" first, and one per
//     cluster only for callers limited to some (see access.go).
//   - Histories are fetched only for the rows on screen.
//
// Callers authenticate as everywhere on the hub: a client certificate
// (the browser presents it; nothing to type) or a bearer token, which the
// page asks for when the API answers 401 and keeps in the tab's
// sessionStorage, sending it as an Authorization header — never in a URL,
// where it would reach logs and history.
package statuspage
