package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"
)

// watcher follows the configmaps of watchNS in one member through the
// virtual IP, the way client-go's reflector does: list, then watch from
// the list's resourceVersion, and when a watch ends, watch again from the
// last resourceVersion it saw. It tells a watch the server ended cleanly
// (the body ended between two events: io.EOF) from one that broke
// (unexpected EOF, a reset, an ERROR event): only the latter would reach
// a client-go user as an error.
type watcher struct {
	tr      *traffic
	cluster string

	mu        sync.Mutex
	seen      map[string]bool
	rv        string
	opened    int // watch requests answered 200
	cleanEnds int
	cleanVia  []string // the replica of each clean end
	errs      []string
	relists   int
}

func (w *watcher) run(ctx context.Context) {
	for ctx.Err() == nil {
		if w.resourceVersion() == "" {
			if err := w.list(ctx); err != nil {
				if ctx.Err() == nil {
					w.fail(fmt.Errorf("list: %w", err))
					sleep(ctx, 200*time.Millisecond)
				}
				continue
			}
		}
		err := w.watchOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			w.mu.Lock()
			w.cleanEnds++
			w.mu.Unlock()
		default:
			w.fail(err)
			sleep(ctx, 200*time.Millisecond)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (w *watcher) resourceVersion() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rv
}

func (w *watcher) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
	w.mu.Unlock()
}

type objectMeta struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
}

// list is the reflector's list; the request is recorded with the calls.
func (w *watcher) list(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.tr.url(w.cluster, "/api/v1/namespaces/"+watchNS+"/configmaps"), nil)
	body := w.tr.do("get", w.cluster, req, http.StatusOK)
	if body == nil {
		return errors.New("list failed (recorded with the calls)")
	}
	var l struct {
		objectMeta
		Items []objectMeta `json:"items"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, it := range l.Items {
		w.seen[it.Metadata.Name] = true
	}
	w.rv = l.Metadata.ResourceVersion
	w.relists++
	return nil
}

// watchOnce runs one watch request to its end: nil when the server ended
// it cleanly.
func (w *watcher) watchOnce(ctx context.Context) error {
	url := w.tr.url(w.cluster, "/api/v1/namespaces/"+watchNS+"/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion="+w.resourceVersion())
	local := &localAddr{}
	req, _ := http.NewRequestWithContext(context.WithValue(ctx, localAddrKey{}, local), http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+w.tr.e.callerToken)
	c := call{kind: "watch", cluster: w.cluster, start: time.Now()}
	resp, err := w.tr.watch.Do(req)
	c.end = time.Now()
	c.via = w.tr.e.replicaOf(local.get())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		c.err, c.refused = err.Error(), errors.Is(err, syscall.ECONNREFUSED)
		w.tr.record(c)
		return fmt.Errorf("open watch via %s: %w", orUnknown(c.via), err)
	}
	defer resp.Body.Close()
	c.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		c.err = truncate(string(b), 300)
		w.tr.record(c)
		return fmt.Errorf("open watch via %s: %d %s", orUnknown(c.via), resp.StatusCode, c.err)
	}
	w.tr.record(c)
	w.mu.Lock()
	w.opened++
	w.mu.Unlock()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				w.mu.Lock()
				w.cleanVia = append(w.cleanVia, orUnknown(c.via))
				w.mu.Unlock()
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch via %s opened %s: stream: %w", orUnknown(c.via), c.start.Format("15:04:05.000"), err)
		}
		if ev.Type == "ERROR" {
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				w.mu.Lock()
				w.rv = "" // too old: list again
				w.mu.Unlock()
			}
			return fmt.Errorf("watch via %s: ERROR event: %d %s", orUnknown(c.via), st.Code, st.Message)
		}
		var obj objectMeta
		if err := json.Unmarshal(ev.Object, &obj); err != nil {
			return fmt.Errorf("watch event: %w", err)
		}
		w.mu.Lock()
		if ev.Type == "ADDED" || ev.Type == "MODIFIED" {
			w.seen[obj.Metadata.Name] = true
		}
		if obj.Metadata.ResourceVersion != "" {
			w.rv = obj.Metadata.ResourceVersion
		}
		w.mu.Unlock()
	}
}

func (w *watcher) missing(names []string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, n := range names {
		if !w.seen[n] {
			out = append(out, n)
		}
	}
	return out
}

// watchFigures are what the watcher saw.
type watchFigures struct {
	opened, cleanEnds, relists int
	errs, cleanVia             []string
}

func (w *watcher) figures() watchFigures {
	w.mu.Lock()
	defer w.mu.Unlock()
	return watchFigures{opened: w.opened, cleanEnds: w.cleanEnds, relists: w.relists, errs: slices.Clone(w.errs), cleanVia: slices.Clone(w.cleanVia)}
}
