package statuspage

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"time"

	"backhaul.io/backhaul/pkg/kubestatus"
)

// ui is the page: no CDN, no build step.
//
//go:embed ui
var ui embed.FS

// asset is one embedded file with what its answers need.
type asset struct {
	data  []byte
	ctype string
	etag  string
}

func loadAssets() (map[string]asset, error) {
	out := map[string]asset{}
	err := fs.WalkDir(ui, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := ui.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			return fmt.Errorf("status page: no content type for %s", p)
		}
		out[path.Base(p)] = asset{data: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("status page assets: %w", err)
	}
	return out, nil
}

// serveAsset answers the script, stylesheet and icon: public code
// without data, so without credentials (a token-holding browser cannot
// send one for a <script src>).
func (p *Page) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "index.html" {
		// The page itself is served at /status, authenticated.
		name = ""
	}
	p.writeAsset(w, r, name, http.StatusOK)
}

// writeAsset answers an embedded file with code. Browsers revalidate
// (no-cache) and get a 304 while the hub's build is the same.
func (p *Page) writeAsset(w http.ResponseWriter, r *http.Request, name string, code int) {
	a, ok := p.assets[name]
	if !ok {
		kubestatus.Write(w, http.StatusNotFound, fmt.Sprintf("%s not found", r.URL.Path))
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", "no-cache")
	if code != http.StatusOK {
		h.Set("Content-Length", strconv.Itoa(len(a.data)))
		w.WriteHeader(code)
		_, _ = w.Write(a.data)
		return
	}
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
}
