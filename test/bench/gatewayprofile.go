package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// agentAdminPort is the bench agent's admin port on its namespace's
// loopback, where -profile fetches its profiles.
const agentAdminPort = 19090

// profileGateway, with -profile, runs sequential gateway GETs for d while
// it takes CPU profiles of the hub and the agent, then an allocation
// profile of each: what a small GET costs each side, function by function.
func profileGateway(ctx context.Context, o *options, env *kubeEnv, gw *http.Client, run latencyRun, d time.Duration) {
	if o.profileDir == "" {
		return
	}
	progress("kube: profiling hub and agent over %s of gateway GETs", d)
	seconds := int(d / time.Second)
	agentURL := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", agentAdminPort)
	fetch := map[string]func(query, path string) error{
		"hub": func(query, path string) error { return fetchProfile(ctx, env.hub.AdminURL+"/debug/pprof/"+query, path) },
		// The agent's admin port is on its namespace's loopback.
		"agent": func(query, path string) error {
			out, err := env.member.Netns.Command(ctx, "curl", "-sSf", "-o", path, agentURL+query).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		},
	}
	var wg sync.WaitGroup
	for name, f := range fetch {
		wg.Go(func() {
			path := filepath.Join(o.profileDir, "gateway-"+name+"-cpu.pprof")
			if err := f(fmt.Sprintf("profile?seconds=%d", seconds), path); err != nil {
				progress("no CPU profile of the %s: %v", name, err)
				return
			}
			addProfile(o, path)
		})
	}
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	buf := make([]byte, 32<<10)
	for pctx.Err() == nil {
		if _, err := get(pctx, gw, run.URL, run.Header, buf); err != nil && pctx.Err() == nil {
			progress("gateway GET while profiling: %v", err)
			break
		}
	}
	wg.Wait()
	for name, f := range fetch {
		path := filepath.Join(o.profileDir, "gateway-"+name+"-allocs.pprof")
		if err := f("allocs", path); err != nil {
			progress("no allocation profile of the %s: %v", name, err)
			continue
		}
		addProfile(o, path)
	}
}

// fetchProfile saves one /debug/pprof profile at url to path. A CPU
// profile's own duration is in the query; there is no client timeout.
func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
